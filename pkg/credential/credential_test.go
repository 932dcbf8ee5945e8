package credential

import (
	"encoding/json"
	"strings"
	"testing"
	"time"
)

func TestReadExecInfo(t *testing.T) {
	in := `{"apiVersion":"client.authentication.k8s.io/v1beta1","kind":"ExecCredential","spec":{"interactive":false,
	"cluster":{"server":"https://1.2.3.4","certificate-authority-data":"Y2E=","config":{"broker":"https://b.example","cluster":"prod","audience":"aud"}}}}`
	info, err := ReadExecInfo(in)
	if err != nil {
		t.Fatal(err)
	}
	if info.APIVersion != V1beta1 || info.Cluster.Server != "https://1.2.3.4" || string(info.Cluster.CertificateAuthorityData) != "ca" {
		t.Fatalf("info %+v", info)
	}
	if info.Config != (Config{Broker: "https://b.example", Cluster: "prod", Audience: "aud"}) {
		t.Fatalf("config %+v", info.Config)
	}
	info, err = ReadExecInfo("")
	if err != nil || info.APIVersion != V1 || info.Cluster != nil {
		t.Fatalf("empty: %+v, %v", info, err)
	}
	info, err = ReadExecInfo(`{"apiVersion":"client.authentication.k8s.io/v1","spec":{"cluster":{"server":"s","config":null}}}`)
	if err != nil || info.APIVersion != V1 || info.Config != (Config{}) {
		t.Fatalf("null config: %+v, %v", info, err)
	}
	for _, bad := range []string{`{`, `{"apiVersion":"client.authentication.k8s.io/v1alpha1"}`, `{"spec":{"cluster":{"config":"str"}}}`} {
		if _, err := ReadExecInfo(bad); err == nil {
			t.Errorf("ReadExecInfo(%s) accepted", bad)
		}
	}
}

func TestRender(t *testing.T) {
	now := time.Date(2026, 1, 1, 0, 0, 0, 0, time.UTC)
	for _, v := range []string{V1, V1beta1, ""} {
		b, err := Render(v, "tok", now.Add(time.Hour), now)
		if err != nil {
			t.Fatal(err)
		}
		var ec ExecCredential
		if err := json.Unmarshal(b, &ec); err != nil {
			t.Fatal(err)
		}
		want := v
		if want == "" {
			want = V1
		}
		if ec.APIVersion != want || ec.Kind != "ExecCredential" || ec.Status.Token != "tok" {
			t.Fatalf("rendered %s", b)
		}
		if !ec.Status.ExpirationTimestamp.Equal(now.Add(59 * time.Minute)) {
			t.Fatalf("expiry %v", ec.Status.ExpirationTimestamp)
		}
		if !strings.Contains(string(b), `"expirationTimestamp":"2026-01-01T00:59:00Z"`) {
			t.Fatalf("not RFC 3339 UTC: %s", b)
		}
	}
	// Short-lived: a third of the remaining life is taken off, not a minute.
	b, _ := Render(V1, "tok", now.Add(90*time.Second), now)
	if !strings.Contains(string(b), `"2026-01-01T00:01:00Z"`) {
		t.Fatalf("short credential: %s", b)
	}
	b, _ = Render(V1, "tok", time.Time{}, now)
	if strings.Contains(string(b), "expirationTimestamp") {
		t.Fatalf("no expiry: %s", b)
	}
	if _, err := Render(V1, "", now, now); err == nil {
		t.Fatal("rendered an empty token")
	}
	if _, err := Render("v2", "t", now, now); err == nil {
		t.Fatal("rendered an unknown version")
	}
}

func FuzzReadExecInfo(f *testing.F) {
	f.Add(`{"apiVersion":"client.authentication.k8s.io/v1","spec":{"cluster":{"server":"s","config":{"broker":"b"}}}}`)
	f.Add(``)
	f.Add(`{"spec":{"cluster":null}}`)
	f.Fuzz(func(t *testing.T, s string) {
		info, err := ReadExecInfo(s)
		if err == nil && info.APIVersion != V1 && info.APIVersion != V1beta1 {
			t.Fatalf("accepted version %q", info.APIVersion)
		}
	})
}
