package policy

import (
	"fmt"
	"regexp"
	"strings"
)

// resourceInfo is one built-in kind as the mapper knows it (kubectl learns
// these from discovery; `check` works offline, so it carries a table).
type resourceInfo struct {
	Group, Version, Resource, Kind string
	Namespaced                     bool
}

// builtinResources: "group/version resource Kind scope shortnames". Core is
// "/v1". Short names are kubectl's, plus a few common aliases.
const builtinResources = `
/v1 pods Pod ns po
/v1 services Service ns svc
/v1 configmaps ConfigMap ns cm
/v1 secrets Secret ns
/v1 serviceaccounts ServiceAccount ns sa
/v1 namespaces Namespace cluster ns
/v1 nodes Node cluster no
/v1 persistentvolumes PersistentVolume cluster pv
/v1 persistentvolumeclaims PersistentVolumeClaim ns pvc
/v1 endpoints Endpoints ns ep
/v1 events Event ns ev
/v1 limitranges LimitRange ns limits
/v1 resourcequotas ResourceQuota ns quota
/v1 replicationcontrollers ReplicationController ns rc
/v1 podtemplates PodTemplate ns
/v1 componentstatuses ComponentStatus cluster cs
/v1 bindings Binding ns
apps/v1 deployments Deployment ns deploy
apps/v1 replicasets ReplicaSet ns rs
apps/v1 statefulsets StatefulSet ns sts
apps/v1 daemonsets DaemonSet ns ds
apps/v1 controllerrevisions ControllerRevision ns
batch/v1 jobs Job ns
batch/v1 cronjobs CronJob ns cj
autoscaling/v2 horizontalpodautoscalers HorizontalPodAutoscaler ns hpa
policy/v1 poddisruptionbudgets PodDisruptionBudget ns pdb
networking.k8s.io/v1 ingresses Ingress ns ing
networking.k8s.io/v1 ingressclasses IngressClass cluster
networking.k8s.io/v1 networkpolicies NetworkPolicy ns netpol
networking.k8s.io/v1 ipaddresses IPAddress cluster ip
networking.k8s.io/v1 servicecidrs ServiceCIDR cluster
discovery.k8s.io/v1 endpointslices EndpointSlice ns
rbac.authorization.k8s.io/v1 roles Role ns
rbac.authorization.k8s.io/v1 rolebindings RoleBinding ns rb
rbac.authorization.k8s.io/v1 clusterroles ClusterRole cluster
rbac.authorization.k8s.io/v1 clusterrolebindings ClusterRoleBinding cluster crb
storage.k8s.io/v1 storageclasses StorageClass cluster sc
storage.k8s.io/v1 csidrivers CSIDriver cluster
storage.k8s.io/v1 csinodes CSINode cluster
storage.k8s.io/v1 volumeattachments VolumeAttachment cluster
storage.k8s.io/v1 csistoragecapacities CSIStorageCapacity ns
storage.k8s.io/v1 volumeattributesclasses VolumeAttributesClass cluster vac
apiextensions.k8s.io/v1 customresourcedefinitions CustomResourceDefinition cluster crd,crds
apiregistration.k8s.io/v1 apiservices APIService cluster
admissionregistration.k8s.io/v1 validatingwebhookconfigurations ValidatingWebhookConfiguration cluster
admissionregistration.k8s.io/v1 mutatingwebhookconfigurations MutatingWebhookConfiguration cluster
admissionregistration.k8s.io/v1 validatingadmissionpolicies ValidatingAdmissionPolicy cluster
admissionregistration.k8s.io/v1 validatingadmissionpolicybindings ValidatingAdmissionPolicyBinding cluster
scheduling.k8s.io/v1 priorityclasses PriorityClass cluster pc
coordination.k8s.io/v1 leases Lease ns
node.k8s.io/v1 runtimeclasses RuntimeClass cluster
certificates.k8s.io/v1 certificatesigningrequests CertificateSigningRequest cluster csr
flowcontrol.apiserver.k8s.io/v1 flowschemas FlowSchema cluster
flowcontrol.apiserver.k8s.io/v1 prioritylevelconfigurations PriorityLevelConfiguration cluster
events.k8s.io/v1 events Event ns ev
authorization.k8s.io/v1 selfsubjectaccessreviews SelfSubjectAccessReview cluster
authorization.k8s.io/v1 selfsubjectrulesreviews SelfSubjectRulesReview cluster
authorization.k8s.io/v1 subjectaccessreviews SubjectAccessReview cluster
authorization.k8s.io/v1 localsubjectaccessreviews LocalSubjectAccessReview ns
authentication.k8s.io/v1 tokenreviews TokenReview cluster
authentication.k8s.io/v1 selfsubjectreviews SelfSubjectReview cluster
metrics.k8s.io/v1beta1 pods PodMetrics ns
metrics.k8s.io/v1beta1 nodes NodeMetrics cluster
`

// resourceTable resolves what a person may type for a resource.
type resourceTable struct {
	all    []resourceInfo
	byName map[string][]int // plural, singular, short name, lower-case kind
}

func newResourceTable() *resourceTable {
	t := &resourceTable{byName: map[string][]int{}}
	for _, line := range strings.Split(strings.TrimSpace(builtinResources), "\n") {
		f := strings.Fields(line)
		gv := strings.SplitN(f[0], "/", 2)
		ri := resourceInfo{Group: gv[0], Version: gv[1], Resource: f[1], Kind: f[2], Namespaced: f[3] == "ns"}
		i := len(t.all)
		t.all = append(t.all, ri)
		names := []string{ri.Resource, strings.ToLower(ri.Kind)}
		if len(f) > 4 {
			names = append(names, strings.Split(f[4], ",")...)
		}
		for _, n := range names {
			if !containsInt(t.byName[n], i) {
				t.byName[n] = append(t.byName[n], i)
			}
		}
	}
	return t
}

func containsInt(l []int, x int) bool {
	for _, y := range l {
		if y == x {
			return true
		}
	}
	return false
}

var versionRE = regexp.MustCompile(`^v\d+((alpha|beta)\d+)?$`)

// lookup resolves a resource argument as kubectl does: "po", "pods", "Pod",
// "deployments.apps", "deployments.v1.apps", "pods." (core). Resource names
// are case-insensitive in kubectl. A dotted name that is not built in is
// taken as a custom resource (plural.group); a bare unknown name is an error.
func (t *resourceTable) lookup(arg string) (resourceInfo, error) {
	s := strings.ToLower(arg)
	if s == "" {
		return resourceInfo{}, fmt.Errorf("empty resource type")
	}
	res, group, version, dotted := s, "", "", false
	if i := strings.IndexByte(s, '.'); i >= 0 {
		dotted = true
		res, group = s[:i], s[i+1:]
		if v, g, ok := strings.Cut(group, "."); ok && versionRE.MatchString(v) {
			version, group = v, g
		} else if versionRE.MatchString(group) && !ok {
			// "pods.v1" is read by kubectl as group "v1"; no such group.
			return resourceInfo{}, fmt.Errorf("unknown resource type %q (write RESOURCE.VERSION.GROUP, for example deployments.v1.apps, or pods.v1. for core)", arg)
		}
		if group == "core" {
			group = "" // not a real group name; read it as the core group, which is the stricter reading
		}
	}
	if res == "" {
		return resourceInfo{}, fmt.Errorf("unknown resource type %q", arg)
	}
	for _, i := range t.byName[res] {
		ri := t.all[i]
		if !dotted && ri.Group == "metrics.k8s.io" {
			continue
		}
		if dotted && ri.Group != group {
			continue
		}
		if version != "" {
			ri.Version = version
		}
		return ri, nil
	}
	if !dotted {
		return resourceInfo{}, fmt.Errorf("unknown resource type %q: use a built-in type (pods, deploy, ...) or RESOURCE.GROUP for custom resources (widgets.example.com)", arg)
	}
	if strings.ContainsAny(res, "/:") || group == "" {
		return resourceInfo{}, fmt.Errorf("unknown resource type %q", arg)
	}
	if version == "" {
		version = "v1"
	}
	// A custom resource: assume namespaced (the stricter reading for
	// namespace rules) and that the user wrote its plural.
	return resourceInfo{Group: group, Version: version, Resource: res, Kind: res, Namespaced: true}, nil
}

// byKind resolves an object's apiVersion and kind (from a manifest).
func (t *resourceTable) byKind(apiVersion, kind string) (resourceInfo, bool) {
	group, version := "", apiVersion
	if g, v, ok := strings.Cut(apiVersion, "/"); ok {
		group, version = g, v
	}
	for _, ri := range t.all {
		if ri.Kind == kind && ri.Group == group {
			ri.Version = version
			return ri, true
		}
	}
	// Unknown kind: the usual lower-case plural, flagged by the caller.
	return resourceInfo{Group: group, Version: version, Resource: pluralize(strings.ToLower(kind)), Kind: kind, Namespaced: true}, false
}

func pluralize(s string) string {
	switch {
	case strings.HasSuffix(s, "s"), strings.HasSuffix(s, "x"), strings.HasSuffix(s, "ch"), strings.HasSuffix(s, "sh"):
		return s + "es"
	case strings.HasSuffix(s, "y") && len(s) > 1 && !strings.ContainsAny(s[len(s)-2:len(s)-1], "aeiou"):
		return s[:len(s)-1] + "ies"
	}
	return s + "s"
}

// apiPath builds the request path for attributes, as client-go would.
func apiPath(a Attributes) string {
	var b strings.Builder
	if a.APIGroup == "" {
		b.WriteString("/api/" + a.APIVersion)
	} else {
		b.WriteString("/apis/" + a.APIGroup + "/" + a.APIVersion)
	}
	if a.Namespace != "" && !(a.APIGroup == "" && a.Resource == "namespaces") {
		b.WriteString("/namespaces/" + a.Namespace)
	}
	b.WriteString("/" + a.Resource)
	if a.Name != "" {
		b.WriteString("/" + a.Name)
		if a.Subresource != "" {
			b.WriteString("/" + a.Subresource)
		}
	}
	return b.String()
}
