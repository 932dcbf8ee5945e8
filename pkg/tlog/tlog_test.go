package tlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/base64"
	"fmt"
	"strings"
	"testing"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

func b64(b []byte) string { return base64.StdEncoding.EncodeToString(b) }

// hashLeaves is identity: mth hashes leaf data itself.
func hashLeaves(l [][]byte) [][]byte { return l }

// mth is RFC 6962's Merkle Tree Hash written out directly, as an
// independent check of the log's roots.
func mth(leaves [][]byte) []byte {
	switch n := len(leaves); n {
	case 0:
		s := sha256.Sum256(nil)
		return s[:]
	case 1:
		s := sha256.Sum256(append([]byte{0}, leaves[0]...))
		return s[:]
	default:
		k := 1
		for k*2 < n {
			k *= 2
		}
		s := sha256.Sum256(append(append([]byte{1}, mth(leaves[:k])...), mth(leaves[k:])...))
		return s[:]
	}
}

func newTestLog(t testing.TB) (*Log, string) {
	t.Helper()
	_, key, _ := ed25519.GenerateKey(rand.Reader)
	const origin = "broker.example/transcripts"
	s, err := NewSigner(origin, key)
	if err != nil {
		t.Fatal(err)
	}
	l, err := New(origin, s, &MemoryStorage{})
	if err != nil {
		t.Fatal(err)
	}
	vk, err := VerifierKey(origin, key.Public().(ed25519.PublicKey))
	if err != nil {
		t.Fatal(err)
	}
	return l, vk
}

func TestInclusionProofs(t *testing.T) {
	ctx := context.Background()
	l, vk := newTestLog(t)
	var leaves [][]byte
	for n := 1; n <= 70; n++ {
		leaf := []byte(fmt.Sprintf(`{"seq":%d,"type":"seal"}`, n))
		idx, err := l.Append(ctx, leaf)
		if err != nil || idx != uint64(n-1) {
			t.Fatalf("append %d: %d %v", n, idx, err)
		}
		leaves = append(leaves, leaf)
		// Every leaf has a valid proof at every size.
		for i := range leaves {
			p, err := l.InclusionProof(ctx, uint64(i))
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(p, leaves[i], vk); err != nil {
				t.Fatalf("size %d leaf %d: %v", n, i, err)
			}
			if i == 0 && !strings.Contains(p.Checkpoint, fmt.Sprintf("\n%d\n%s\n", n, b64(mth(hashLeaves(leaves))))) {
				t.Fatalf("checkpoint %q is not for size %d with the RFC 6962 root", p.Checkpoint, n)
			}
		}
	}
	// The checkpoint's root is RFC 6962's MTH.
	cp, err := l.Checkpoint(ctx)
	if err != nil {
		t.Fatal(err)
	}
	root := mth(hashLeaves(leaves))
	if !strings.Contains(cp, b64(root)) {
		t.Fatalf("checkpoint %q does not carry the RFC 6962 root %s", cp, b64(root))
	}
}

func TestInclusionProofRejects(t *testing.T) {
	ctx := context.Background()
	l, vk := newTestLog(t)
	for i := range 13 {
		if _, err := l.Append(ctx, []byte{byte(i)}); err != nil {
			t.Fatal(err)
		}
	}
	good, err := l.InclusionProof(ctx, 5)
	if err != nil {
		t.Fatal(err)
	}
	if err := VerifyInclusion(good, []byte{5}, vk); err != nil {
		t.Fatal(err)
	}
	_, otherVK := newTestLog(t)
	clone := func() *api.InclusionProof {
		c := *good
		c.Hashes = make([][]byte, len(good.Hashes))
		for i := range good.Hashes {
			c.Hashes[i] = bytes.Clone(good.Hashes[i])
		}
		return &c
	}
	badHash := clone()
	badHash.Hashes[1][0] ^= 1
	badIndex := clone()
	badIndex.LeafIndex = 4
	badSize := clone()
	badSize.TreeSize = 14
	badNote := clone()
	badNote.Checkpoint = strings.Replace(good.Checkpoint, "\n13\n", "\n12\n", 1)
	cases := []struct {
		name string
		p    *api.InclusionProof
		leaf []byte
		vk   string
		want string
	}{
		{"other leaf", good, []byte{6}, vk, "leaf hash"},
		{"other log key", good, []byte{5}, otherVK, "checkpoint"},
		{"edited proof hash", badHash, []byte{5}, vk, "does not lead"},
		{"other index", badIndex, []byte{5}, vk, "does not lead"},
		{"other size", badSize, []byte{5}, vk, "tree size"},
		{"edited checkpoint", badNote, []byte{5}, vk, "checkpoint"},
		{"no proof", nil, []byte{5}, vk, "no inclusion proof"},
	}
	for _, tc := range cases {
		if err := VerifyInclusion(tc.p, tc.leaf, tc.vk); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%s: err = %v, want %q", tc.name, err, tc.want)
		}
	}
}

func FuzzVerifyInclusion(f *testing.F) {
	ctx := context.Background()
	l, vk := newTestLog(f)
	for i := range 5 {
		_, _ = l.Append(ctx, []byte{byte(i)})
	}
	p, _ := l.InclusionProof(ctx, 2)
	f.Add(p.Checkpoint, uint64(2), uint64(5))
	f.Add("", uint64(0), uint64(0))
	f.Add("x\n1\nAAAA\n\n— x AAAA\n", uint64(0), uint64(1))
	f.Fuzz(func(t *testing.T, note string, idx, size uint64) {
		q := *p
		q.Checkpoint, q.LeafIndex, q.TreeSize = note, idx, size
		err := VerifyInclusion(&q, []byte{2}, vk)
		if err == nil && (note != p.Checkpoint || idx != 2 || size != 5) {
			t.Fatalf("accepted a changed proof: %q %d %d", note, idx, size)
		}
	})
}

func BenchmarkInclusionProof(b *testing.B) {
	ctx := context.Background()
	l, vk := newTestLog(b)
	for i := range 100000 {
		_, _ = l.Append(ctx, []byte(fmt.Sprint(i)))
	}
	b.ResetTimer()
	for i := range b.N {
		idx := uint64(i*7919) % 100000
		p, err := l.InclusionProof(ctx, idx)
		if err != nil {
			b.Fatal(err)
		}
		if err := VerifyInclusion(p, []byte(fmt.Sprint(idx)), vk); err != nil {
			b.Fatal(err)
		}
	}
}
