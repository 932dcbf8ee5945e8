// Package tlog is the broker's append-only transparency log of sealed
// transcripts: an RFC 6962 Merkle tree over leaves kept in a Storage, signed
// checkpoints in the C2SP checkpoint format (signed notes), and inclusion
// proofs that a client checks offline with the log's verifier key.
//
// The leaf of a sealed transcript is its seal line: the exact bytes of the
// last line, without the newline. The seal's DSSE statement commits to every
// line before it, so the leaf commits to the whole transcript.
package tlog

import (
	"bytes"
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"fmt"
	"strings"
	"sync"

	"github.com/transparency-dev/formats/log"
	"github.com/transparency-dev/merkle/compact"
	"github.com/transparency-dev/merkle/proof"
	"github.com/transparency-dev/merkle/rfc6962"
	"golang.org/x/mod/sumdb/note"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
)

// Storage keeps the leaf hashes of the log, in order. The broker implements
// it on its store (SQLite or PostgreSQL); AppendLeaf must assign indexes
// 0, 1, 2, ... without gaps, also when several brokers append at once.
type Storage interface {
	AppendLeaf(ctx context.Context, leafHash []byte) (index uint64, err error)
	// LeafHashes returns the hashes of leaves [from, to).
	LeafHashes(ctx context.Context, from, to uint64) ([][]byte, error)
	Size(ctx context.Context) (uint64, error)
}

var hasher = rfc6962.DefaultHasher

// LeafHash is the RFC 6962 leaf hash of leaf data.
func LeafHash(leafData []byte) []byte { return hasher.HashLeaf(leafData) }

// cacheMinLevel: subtrees of at least 2^cacheMinLevel leaves have their
// hashes kept; they never change in an append-only tree.
const (
	cacheMinLevel = 4
	readBatch     = 4096
)

// Log is a Merkle log over a Storage. It is safe for concurrent use.
type Log struct {
	origin  string
	signer  note.Signer
	storage Storage

	mu    sync.Mutex
	rng   *compact.Range // the tree's right edge, for roots
	cache map[compact.NodeID][]byte
	rf    *compact.RangeFactory
}

// New returns the log named origin (e.g. "broker.example.com/transcripts"),
// signing checkpoints with signer, whose name must be origin.
func New(origin string, signer note.Signer, storage Storage) (*Log, error) {
	if signer.Name() != origin {
		return nil, fmt.Errorf("tlog: signer is named %q, not the log origin %q", signer.Name(), origin)
	}
	rf := &compact.RangeFactory{Hash: hasher.HashChildren}
	return &Log{origin: origin, signer: signer, storage: storage, rf: rf, rng: rf.NewEmptyRange(0), cache: map[compact.NodeID][]byte{}}, nil
}

// NewSigner makes a note signer named origin from an ed25519 key, so the
// broker can sign checkpoints with a key it already holds.
func NewSigner(origin string, key ed25519.PrivateKey) (note.Signer, error) {
	vkey, err := VerifierKey(origin, key.Public().(ed25519.PublicKey))
	if err != nil {
		return nil, err
	}
	// vkey is "<name>+<hash>+<base64(alg||pub)>"; the signer key uses the same
	// name and hash with the seed.
	parts := strings.SplitN(vkey, "+", 3)
	if len(parts) != 3 {
		return nil, errors.New("tlog: unexpected verifier key form")
	}
	skey := "PRIVATE+KEY+" + parts[0] + "+" + parts[1] + "+" + base64.StdEncoding.EncodeToString(append([]byte{1}, key.Seed()...))
	return note.NewSigner(skey)
}

// VerifierKey is the note verifier key ("<origin>+<hash>+<key>") that
// clients use to check checkpoints and inclusion proofs.
func VerifierKey(origin string, pub ed25519.PublicKey) (string, error) {
	k, err := note.NewEd25519VerifierKey(origin, pub)
	if err != nil {
		return "", fmt.Errorf("tlog: verifier key: %w", err)
	}
	return k, nil
}

// Append adds a leaf and returns its index.
func (l *Log) Append(ctx context.Context, leafData []byte) (uint64, error) {
	idx, err := l.storage.AppendLeaf(ctx, LeafHash(leafData))
	if err != nil {
		return 0, fmt.Errorf("appending to the transcript log: %w", err)
	}
	return idx, nil
}

// catchUp extends the in-memory right edge to size (l.mu held). Other
// brokers may have appended, so it reads what it has not seen.
func (l *Log) catchUp(ctx context.Context, size uint64) error {
	for from := l.rng.End(); from < size; {
		to := min(from+readBatch, size)
		hs, err := l.storage.LeafHashes(ctx, from, to)
		if err != nil {
			return fmt.Errorf("reading the transcript log: %w", err)
		}
		if uint64(len(hs)) != to-from {
			return fmt.Errorf("reading the transcript log: got %d leaves for [%d, %d)", len(hs), from, to)
		}
		for _, h := range hs {
			if err := l.rng.Append(h, nil); err != nil {
				return err
			}
		}
		from = to
	}
	return nil
}

// state is the current size and root.
func (l *Log) state(ctx context.Context) (uint64, []byte, error) {
	size, err := l.storage.Size(ctx)
	if err != nil {
		return 0, nil, fmt.Errorf("reading the transcript log size: %w", err)
	}
	if err := l.catchUp(ctx, size); err != nil {
		return 0, nil, err
	}
	if size == 0 {
		return 0, hasher.EmptyRoot(), nil
	}
	// The edge may be ahead of size if storage raced us; roots need exactly size.
	if l.rng.End() != size {
		return 0, nil, fmt.Errorf("transcript log moved while reading (%d != %d)", l.rng.End(), size)
	}
	root, err := l.rng.GetRootHash(nil)
	if err != nil {
		return 0, nil, err
	}
	return size, root, nil
}

func (l *Log) sign(size uint64, root []byte) (string, error) {
	text := log.Checkpoint{Origin: l.origin, Size: size, Hash: root}.Marshal()
	b, err := note.Sign(&note.Note{Text: string(text)}, l.signer)
	if err != nil {
		return "", fmt.Errorf("signing log checkpoint: %w", err)
	}
	return string(b), nil
}

// Checkpoint returns a signed checkpoint of the log as it is now.
func (l *Log) Checkpoint(ctx context.Context) (string, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	size, root, err := l.state(ctx)
	if err != nil {
		return "", err
	}
	return l.sign(size, root)
}

// InclusionProof proves that leaf index is in the log at its current size,
// with a checkpoint signed for that size.
func (l *Log) InclusionProof(ctx context.Context, index uint64) (*api.InclusionProof, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	size, root, err := l.state(ctx)
	if err != nil {
		return nil, err
	}
	nodes, err := proof.Inclusion(index, size)
	if err != nil {
		return nil, fmt.Errorf("inclusion proof: %w", err)
	}
	hashes := make([][]byte, len(nodes.IDs))
	for i, id := range nodes.IDs {
		if hashes[i], err = l.nodeHash(ctx, id); err != nil {
			return nil, err
		}
	}
	hashes, err = nodes.Rehash(hashes, hasher.HashChildren)
	if err != nil {
		return nil, err
	}
	leaf, err := l.storage.LeafHashes(ctx, index, index+1)
	if err != nil || len(leaf) != 1 {
		return nil, fmt.Errorf("reading leaf %d: %v", index, err)
	}
	cp, err := l.sign(size, root)
	if err != nil {
		return nil, err
	}
	return &api.InclusionProof{LeafIndex: index, TreeSize: size, LeafHash: leaf[0], Hashes: hashes, Checkpoint: cp}, nil
}

// nodeHash is the hash of a perfect subtree (l.mu held).
func (l *Log) nodeHash(ctx context.Context, id compact.NodeID) ([]byte, error) {
	if h, ok := l.cache[id]; ok {
		return h, nil
	}
	begin, end := id.Coverage()
	hs, err := l.storage.LeafHashes(ctx, begin, end)
	if err != nil {
		return nil, fmt.Errorf("reading the transcript log: %w", err)
	}
	if uint64(len(hs)) != end-begin {
		return nil, fmt.Errorf("reading the transcript log: got %d leaves for [%d, %d)", len(hs), begin, end)
	}
	// A perfect subtree: hash pairs level by level.
	for len(hs) > 1 {
		next := make([][]byte, len(hs)/2)
		for i := range next {
			next[i] = hasher.HashChildren(hs[2*i], hs[2*i+1])
		}
		hs = next
	}
	h := hs[0]
	if id.Level >= cacheMinLevel {
		l.cache[id] = h
	}
	return h, nil
}

// VerifyInclusion checks an inclusion proof offline: the checkpoint is
// signed by verifierKey (whose name is the log origin), the leaf hash is
// that of leafData, and the proof leads from the leaf to the checkpoint's root.
func VerifyInclusion(p *api.InclusionProof, leafData []byte, verifierKey string) error {
	if p == nil {
		return errors.New("no inclusion proof")
	}
	v, err := note.NewVerifier(verifierKey)
	if err != nil {
		return fmt.Errorf("log verifier key: %w", err)
	}
	cp, _, _, err := log.ParseCheckpoint([]byte(p.Checkpoint), v.Name(), v)
	if err != nil {
		return fmt.Errorf("log checkpoint: %w", err)
	}
	if cp.Size != p.TreeSize {
		return fmt.Errorf("proof is for tree size %d, the checkpoint is for %d", p.TreeSize, cp.Size)
	}
	lh := LeafHash(leafData)
	if !bytes.Equal(lh, p.LeafHash) {
		return errors.New("the leaf hash in the proof is not the hash of this transcript's seal")
	}
	if err := proof.VerifyInclusion(hasher, p.LeafIndex, p.TreeSize, lh, p.Hashes, cp.Hash); err != nil {
		return fmt.Errorf("inclusion proof does not lead to the signed root: %w", err)
	}
	return nil
}

// MemoryStorage is an in-memory Storage, for tests and single-process use.
type MemoryStorage struct {
	mu     sync.Mutex
	leaves [][]byte
}

// AppendLeaf implements Storage.
func (m *MemoryStorage) AppendLeaf(_ context.Context, h []byte) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	m.leaves = append(m.leaves, bytes.Clone(h))
	return uint64(len(m.leaves) - 1), nil
}

// LeafHashes implements Storage.
func (m *MemoryStorage) LeafHashes(_ context.Context, from, to uint64) ([][]byte, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	if from > to || to > uint64(len(m.leaves)) {
		return nil, fmt.Errorf("leaves [%d, %d) out of range (size %d)", from, to, len(m.leaves))
	}
	return append([][]byte(nil), m.leaves[from:to]...), nil
}

// Size implements Storage.
func (m *MemoryStorage) Size(context.Context) (uint64, error) {
	m.mu.Lock()
	defer m.mu.Unlock()
	return uint64(len(m.leaves)), nil
}
