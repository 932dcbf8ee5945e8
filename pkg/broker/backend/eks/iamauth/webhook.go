package iamauth

import (
	"encoding/json"
	"io"
	"net/http"
	"strings"

	authnv1 "k8s.io/api/authentication/v1"
)

// RoleMapping maps an IAM role (by its canonical ARN) to a Kubernetes user,
// like an EKS access entry or an aws-auth mapRoles item.
type RoleMapping struct {
	RoleARN string
	// Username may hold {{SessionName}}, {{AccountID}} and {{AccessKeyID}}.
	Username string
	Groups   []string
}

// Webhook is a Kubernetes token-review webhook (authentication.k8s.io/v1)
// that authenticates EKS tokens as EKS does: Verify, then the role mapping.
// It lets a plain kube-apiserver (--authentication-token-webhook-config-file)
// accept the tokens of the eks backend in tests.
type Webhook struct {
	Verifier *Verifier
	Roles    []RoleMapping
}

func (h *Webhook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var review authnv1.TokenReview
	body, err := io.ReadAll(io.LimitReader(r.Body, 1<<20))
	if err != nil || json.Unmarshal(body, &review) != nil {
		http.Error(w, "expected a TokenReview", http.StatusBadRequest)
		return
	}
	review.Status = authnv1.TokenReviewStatus{}
	token := review.Spec.Token
	review.Spec = authnv1.TokenReviewSpec{} // never echo the token back
	id, err := h.Verifier.Verify(r.Context(), token)
	if err != nil {
		review.Status.Error = err.Error()
	} else if m := h.mapping(id); m == nil {
		review.Status.Error = "ARN is not mapped: " + id.CanonicalARN
	} else {
		review.Status.Authenticated = true
		review.Status.User = authnv1.UserInfo{
			Username: strings.NewReplacer("{{SessionName}}", id.SessionName, "{{AccountID}}", id.AccountID, "{{AccessKeyID}}", id.AccessKeyID).Replace(m.Username),
			UID:      "aws-iam-authenticator:" + id.AccountID + ":" + id.UserID,
			Groups:   m.Groups,
			Extra: map[string]authnv1.ExtraValue{
				"arn":          {id.ARN},
				"canonicalArn": {id.CanonicalARN},
				"sessionName":  {id.SessionName},
				"accessKeyId":  {id.AccessKeyID},
			},
		}
	}
	review.APIVersion, review.Kind = "authentication.k8s.io/v1", "TokenReview"
	w.Header().Set("Content-Type", "application/json")
	_ = json.NewEncoder(w).Encode(&review)
}

func (h *Webhook) mapping(id *Identity) *RoleMapping {
	for i := range h.Roles {
		if strings.EqualFold(h.Roles[i].RoleARN, id.CanonicalARN) {
			return &h.Roles[i]
		}
	}
	return nil
}
