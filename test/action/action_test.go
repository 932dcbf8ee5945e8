// Package action tests the GitHub Action's installer (plugin/install.sh, run by
// action.yml) against a local release server: it installs a checksum-verified
// kubectl-agent and refuses a tampered archive.
package action

import (
	"archive/tar"
	"compress/gzip"
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strings"
	"testing"

	"sigs.k8s.io/yaml"
)

func tarGz(t *testing.T, files map[string][]byte) []byte {
	t.Helper()
	var buf strings.Builder
	gz := gzip.NewWriter(&buf)
	tw := tar.NewWriter(gz)
	for name, b := range files {
		if err := tw.WriteHeader(&tar.Header{Name: name, Mode: 0o755, Size: int64(len(b))}); err != nil {
			t.Fatal(err)
		}
		if _, err := tw.Write(b); err != nil {
			t.Fatal(err)
		}
	}
	if err := tw.Close(); err != nil {
		t.Fatal(err)
	}
	if err := gz.Close(); err != nil {
		t.Fatal(err)
	}
	return []byte(buf.String())
}

// releaseServer serves one release the way GitHub lays it out.
func releaseServer(t *testing.T, version string, archive []byte, sum string) *httptest.Server {
	name := fmt.Sprintf("kubectl-agent_%s_%s_%s.tar.gz", strings.TrimPrefix(version, "v"), runtime.GOOS, runtime.GOARCH)
	mux := http.NewServeMux()
	mux.HandleFunc("/download/"+version+"/"+name, func(w http.ResponseWriter, r *http.Request) { w.Write(archive) })
	mux.HandleFunc("/download/"+version+"/checksums.txt", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "%s  %s\n", sum, name)
	})
	mux.HandleFunc("/latest", func(w http.ResponseWriter, r *http.Request) {
		http.Redirect(w, r, "/tag/"+version, http.StatusFound)
	})
	mux.HandleFunc("/tag/"+version, func(w http.ResponseWriter, r *http.Request) {})
	srv := httptest.NewServer(mux)
	t.Cleanup(srv.Close)
	return srv
}

func install(t *testing.T, base, version string) (dest string, out string, err error) {
	dest = filepath.Join(t.TempDir(), "bin")
	cmd := exec.Command("bash", "../../plugin/install.sh")
	cmd.Env = append(os.Environ(), "KA_BASE="+base, "KA_VERSION="+version, "KA_DEST="+dest, "GITHUB_PATH=")
	b, err := cmd.CombinedOutput()
	return dest, string(b), err
}

func TestInstallVerifiesChecksum(t *testing.T) {
	bin := []byte("#!/bin/sh\necho kubectl-agent-test\n")
	archive := tarGz(t, map[string][]byte{"kubectl-agent": bin, "kubectl_complete-agent": []byte("#!/bin/sh\n"), "LICENSE": []byte("x")})
	h := sha256.Sum256(archive)
	good := hex.EncodeToString(h[:])

	srv := releaseServer(t, "v9.8.7", archive, good)
	for _, version := range []string{"v9.8.7", "latest"} {
		dest, out, err := install(t, srv.URL, version)
		if err != nil {
			t.Fatalf("install %s failed: %v\n%s", version, err, out)
		}
		got, err := exec.Command(filepath.Join(dest, "kubectl-agent")).Output()
		if err != nil || string(got) != "kubectl-agent-test\n" {
			t.Fatalf("installed binary did not run: %v %q", err, got)
		}
		if !strings.Contains(out, "sha256 "+good+" verified") {
			t.Fatalf("install output does not report the verified checksum:\n%s", out)
		}
	}

	bad := releaseServer(t, "v9.8.7", archive, strings.Repeat("0", 64))
	dest, out, err := install(t, bad.URL, "v9.8.7")
	if err == nil || !strings.Contains(out, "checksum mismatch") {
		t.Fatalf("a tampered archive was installed (err %v):\n%s", err, out)
	}
	if _, err := os.Stat(filepath.Join(dest, "kubectl-agent")); err == nil {
		t.Fatal("a binary was left behind after a checksum mismatch")
	}
}

// The action must wire its inputs to the installer and to `kubectl agent kubeconfig`.
func TestActionManifest(t *testing.T) {
	b, err := os.ReadFile("../../action.yml")
	if err != nil {
		t.Fatal(err)
	}
	var action struct {
		Inputs map[string]struct {
			Required bool   `json:"required"`
			Default  string `json:"default"`
		} `json:"inputs"`
		Runs struct {
			Using string `json:"using"`
			Steps []struct {
				Run string `json:"run"`
			} `json:"steps"`
		} `json:"runs"`
	}
	if err := yaml.UnmarshalStrict(b, &action, yaml.DisallowUnknownFields); err != nil {
		// GitHub's schema has fields we don't model (branding, outputs...).
		if err := yaml.Unmarshal(b, &action); err != nil {
			t.Fatalf("action.yml: %v", err)
		}
	}
	if action.Runs.Using != "composite" {
		t.Fatalf("runs.using = %q, want composite", action.Runs.Using)
	}
	for _, in := range []string{"broker", "cluster"} {
		if !action.Inputs[in].Required {
			t.Errorf("input %s should be required", in)
		}
	}
	var all strings.Builder
	for _, s := range action.Runs.Steps {
		all.WriteString(s.Run)
	}
	for _, want := range []string{"plugin/install.sh", "kubectl-agent kubeconfig --broker", "GITHUB_ENV"} {
		if !strings.Contains(all.String(), want) {
			t.Errorf("action steps do not contain %q", want)
		}
	}
}
