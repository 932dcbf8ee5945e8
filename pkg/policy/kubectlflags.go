package policy

import (
	"fmt"
	"strings"
)

// kubectl's flags, as far as the mapper needs them: which take a value (so
// the next word is not a positional argument) and which are booleans. An
// unknown flag is an error rather than a guess, because a wrong guess would
// shift every positional argument after it.

// valueFlags are flags that take a value in every command that has them.
// "short:long" or "long".
const valueFlags = `n:namespace context cluster user kubeconfig s:server token as as-group as-uid request-timeout
certificate-authority client-certificate client-key tls-server-name cache-dir v:v vmodule profile profile-output
log-file log-file-max-size log-flush-frequency username password log-dir stderrthreshold
f:filename k:kustomize l:selector o:output field-selector field-manager grace-period timeout replicas
current-replicas resource-version image to-revision template sort-by chunk-size L:label-columns since
since-time tail limit-bytes max-log-requests address port pod-running-timeout labels restart overrides
requests limits target copy-to set-image prune-allowlist prune-whitelist subresource from-literal from-file
from-env-file from keys raw for type patch-file docker-server docker-username docker-password docker-email
cert key clusterrole role serviceaccount group verb resource resource-name aggregation-rule schedule tcp
external-name node-port rule class annotation default-backend min-available max-unavailable hard scopes
value description preemption-policy duration audience bound-object-kind bound-object-name bound-object-uid
pod-selector skip-wait-for-delete-timeout name protocol target-port external-ip session-affinity cluster-ip
load-balancer-ip generator min max cpu-percent cpu memory image-pull-policy custom-columns env-file
retries container-name filename-output output-directory custom-profile attach-timeout selector-key
containers contains`

// boolFlags are booleans (also accepted as --flag=value, like pflag's
// optional-value flags --dry-run, --cascade, --validate).
const boolFlags = `insecure-skip-tls-verify match-server-version warnings-as-errors disable-compression
logtostderr alsologtostderr one-output skip-headers skip-log-headers add-dir-header
dry-run cascade validate force-conflicts server-side overwrite local all A:all-namespaces R:recursive
w:watch watch-only output-watch-events ignore-not-found now force wait record save-config
show-managed-fields no-headers show-kind show-events ignore-daemonsets delete-emptydir-data
delete-local-data disable-eviction i:stdin t:tty q:quiet rm privileged share-processes same-node
keep-annotations keep-labels keep-liveness keep-readiness keep-startup keep-init-containers
prune timestamps prefix all-containers ignore-errors interactive allow-missing-template-keys list resolve
no-preserve windows-line-endings output-patch show-labels include-uninitialized leave-stdin-open
expose exit-code subresource-status experimental-wait-for-delete unchanged force-wait`

type flagDef struct {
	long  string
	value bool
}

type flagSet struct {
	long  map[string]flagDef
	short map[byte]flagDef
}

func newFlagSet(overrides ...string) *flagSet {
	fs := &flagSet{long: map[string]flagDef{}, short: map[byte]flagDef{}}
	add := func(spec string, value bool) {
		for _, w := range strings.Fields(spec) {
			long := w
			if s, l, ok := strings.Cut(w, ":"); ok {
				long = l
				fs.short[s[0]] = flagDef{long: l, value: value}
			}
			fs.long[long] = flagDef{long: long, value: value}
		}
	}
	add(valueFlags, true)
	add(boolFlags, false)
	// overrides: "+x:long" value flag, "-x:long" bool flag, replacing the
	// default meaning of the short letter in this command.
	for _, o := range overrides {
		for _, w := range strings.Fields(o) {
			add(w[1:], w[0] == '+')
		}
	}
	return fs
}

// parsedArgs is a command line split into flags and positional arguments.
type parsedArgs struct {
	flags   map[string][]string // by long name; booleans hold "true" or their =value
	args    []string            // positional arguments before "--"
	dashArg []string            // everything after "--"
	dash    bool
}

func (p *parsedArgs) has(long string) bool { _, ok := p.flags[long]; return ok }

func (p *parsedArgs) bool(long string) bool {
	v, ok := p.flags[long]
	if !ok {
		return false
	}
	last := strings.ToLower(v[len(v)-1])
	return last != "false" && last != "0"
}

func (p *parsedArgs) str(long string) string {
	v := p.flags[long]
	if len(v) == 0 {
		return ""
	}
	return v[len(v)-1]
}

func (fs *flagSet) parse(argv []string) (*parsedArgs, error) {
	p := &parsedArgs{flags: map[string][]string{}}
	for i := 0; i < len(argv); i++ {
		w := argv[i]
		switch {
		case w == "--":
			p.dash = true
			p.dashArg = append(p.dashArg, argv[i+1:]...)
			return p, nil
		case strings.HasPrefix(w, "--"):
			name, val, hasVal := strings.Cut(w[2:], "=")
			def, ok := fs.long[name]
			if !ok {
				return nil, fmt.Errorf("unknown flag --%s (if it takes a value, write --%s=VALUE)", name, name)
			}
			if def.value && !hasVal {
				if i+1 >= len(argv) {
					return nil, fmt.Errorf("flag --%s needs a value", name)
				}
				i++
				val = argv[i]
			} else if !hasVal {
				val = "true"
			}
			p.flags[def.long] = append(p.flags[def.long], val)
		case strings.HasPrefix(w, "-") && len(w) > 1:
			for j := 1; j < len(w); j++ {
				def, ok := fs.short[w[j]]
				if !ok {
					return nil, fmt.Errorf("unknown shorthand flag -%c in %q", w[j], w)
				}
				if !def.value {
					if j+1 < len(w) && w[j+1] == '=' {
						p.flags[def.long] = append(p.flags[def.long], w[j+2:])
						break
					}
					p.flags[def.long] = append(p.flags[def.long], "true")
					continue
				}
				val := strings.TrimPrefix(w[j+1:], "=")
				if j+1 >= len(w) {
					if i+1 >= len(argv) {
						return nil, fmt.Errorf("flag -%c needs a value", w[j])
					}
					i++
					val = argv[i]
				}
				p.flags[def.long] = append(p.flags[def.long], val)
				break
			}
		default:
			p.args = append(p.args, w)
		}
	}
	return p, nil
}

// commandFlagOverrides gives short letters that mean something else in
// some commands.
var commandFlagOverrides = map[string]string{
	"logs":         "-f:follow -p:previous +c:container",
	"patch":        "+p:patch",
	"exec":         "+c:container +p:pod",
	"attach":       "+c:container",
	"cp":           "+c:container",
	"debug":        "+c:container +e:env",
	"run":          "+e:env",
	"set":          "+c:containers +e:env",
	"port-forward": "+p:pod",
	"label":        "",
}
