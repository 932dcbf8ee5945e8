package session

import (
	"context"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"time"

	"github.com/gofrs/flock"

	"github.com/kubectl-agent/kubectl-agent/pkg/api"
	"github.com/kubectl-agent/kubectl-agent/pkg/identity"
)

// entryVersion is the cache entry format; an entry of another version is
// ignored (and replaced), never misread.
const entryVersion = 1

// Entry is one cached session: everything needed to make session calls and
// to print a credential without asking the broker. It holds secrets (the
// session token, the session key, the cluster token), so its file is 0600.
type Entry struct {
	Version            int             `json:"version"`
	Key                string          `json:"key"`
	Broker             string          `json:"broker"`
	Cluster            string          `json:"cluster"`
	Audience           string          `json:"audience"`
	Run                identity.Run    `json:"run"`
	SessionToken       string          `json:"sessionToken"`
	SessionKey         []byte          `json:"sessionKey"` // ed25519 private key (64 bytes)
	Session            api.Session     `json:"session"`
	Credential         *api.Credential `json:"credential,omitempty"`
	CredentialIssuedAt time.Time       `json:"credentialIssuedAt"`
	CreatedAt          time.Time       `json:"createdAt"`
}

// PrivateKey is the session's DPoP key.
func (e *Entry) PrivateKey() ed25519.PrivateKey { return ed25519.PrivateKey(e.SessionKey) }

// Cache is a folder of session entries, one file per entry plus a lock file
// beside it, and index files that map a run's environment-derived identity
// to an entry (see Manager).
type Cache struct {
	Dir string
}

// DefaultCacheDir picks the cache folder: $KUBECACHEDIR/kubectl-agent when
// set; else a per-job temporary folder the CI system cleans up (GitHub's
// RUNNER_TEMP, GitLab's "$CI_PROJECT_DIR.tmp"), so that session keys do not
// outlive the job on shared runners; else ~/.kube/cache/kubectl-agent.
func DefaultCacheDir(env func(string) string) (string, error) {
	if d := env("KUBECACHEDIR"); d != "" {
		return filepath.Join(d, "kubectl-agent"), nil
	}
	if d := env("RUNNER_TEMP"); d != "" && env("GITHUB_ACTIONS") == "true" {
		return filepath.Join(d, "kubectl-agent"), nil
	}
	if d := env("CI_PROJECT_DIR"); d != "" && env("GITLAB_CI") == "true" {
		// The runner keeps file-type variables there; it is outside the
		// checkout, so caches and artifacts never pick it up.
		if fi, err := os.Stat(d + ".tmp"); err == nil && fi.IsDir() {
			return filepath.Join(d+".tmp", "kubectl-agent"), nil
		}
	}
	home := env("HOME")
	if home == "" {
		var err error
		if home, err = os.UserHomeDir(); err != nil {
			return "", fmt.Errorf("finding the session cache folder: %w; set KUBECACHEDIR", err)
		}
	}
	return filepath.Join(home, ".kube", "cache", "kubectl-agent"), nil
}

// OpenCache creates dir (0700) when missing and refuses one that others
// can read or that another user owns.
func OpenCache(dir string) (*Cache, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("creating the session cache folder: %w", err)
	}
	fi, err := os.Stat(dir)
	if err != nil {
		return nil, fmt.Errorf("reading the session cache folder: %w", err)
	}
	if !fi.IsDir() {
		return nil, fmt.Errorf("session cache %s is not a folder; remove it or set KUBECACHEDIR", dir)
	}
	if err := private(dir, fi); err != nil {
		return nil, err
	}
	return &Cache{Dir: dir}, nil
}

// private refuses files and folders that leak session keys to others.
func private(path string, fi fs.FileInfo) error {
	if fi.Mode().Perm()&0o077 != 0 {
		what, fix := "file", "chmod 600"
		if fi.IsDir() {
			what, fix = "folder", "chmod 700"
		}
		return fmt.Errorf("session cache %s %s is open to group or others (mode %04o); it holds session keys: run `%s %s`",
			what, path, fi.Mode().Perm(), fix, path)
	}
	if st, ok := fi.Sys().(*syscall.Stat_t); ok && int(st.Uid) != os.Getuid() {
		return fmt.Errorf("session cache %s belongs to uid %d, not to you (uid %d); remove it or set KUBECACHEDIR", path, st.Uid, os.Getuid())
	}
	return nil
}

var keyRE = regexp.MustCompile(`^(idx-|key-)?[0-9a-f]{64}$`)

func (c *Cache) path(key, ext string) (string, error) {
	if !keyRE.MatchString(key) {
		return "", fmt.Errorf("bad cache key %q", key)
	}
	return filepath.Join(c.Dir, key+ext), nil
}

// readJSON reads a private file into v; found is false when it does not
// exist.
func (c *Cache) readJSON(key string, v any) (found bool, err error) {
	p, err := c.path(key, ".json")
	if err != nil {
		return false, err
	}
	f, err := os.Open(p)
	if errors.Is(err, fs.ErrNotExist) {
		return false, nil
	}
	if err != nil {
		return false, fmt.Errorf("reading the session cache: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return false, fmt.Errorf("reading the session cache: %w", err)
	}
	if err := private(p, fi); err != nil {
		return false, err
	}
	b, err := io.ReadAll(io.LimitReader(f, 1<<20))
	if err != nil {
		return false, fmt.Errorf("reading the session cache: %w", err)
	}
	if err := json.Unmarshal(b, v); err != nil {
		return false, fmt.Errorf("session cache file %s is damaged (%v); remove it (or run `kubectl agent logout`)", p, err)
	}
	return true, nil
}

// writeJSON writes v atomically: a 0600 temporary file in the same folder,
// synced, then renamed over the old one, so readers never see half a file.
func (c *Cache) writeJSON(key string, v any) error {
	p, err := c.path(key, ".json")
	if err != nil {
		return err
	}
	b, err := json.Marshal(v)
	if err != nil {
		return fmt.Errorf("encoding the session cache entry: %w", err)
	}
	f, err := os.CreateTemp(c.Dir, ".tmp-*") // CreateTemp makes 0600 files
	if err != nil {
		return fmt.Errorf("writing the session cache: %w", err)
	}
	tmp := f.Name()
	defer os.Remove(tmp) // a no-op after the rename
	if _, err := f.Write(b); err != nil {
		f.Close()
		return fmt.Errorf("writing the session cache: %w", err)
	}
	if err := f.Sync(); err != nil {
		f.Close()
		return fmt.Errorf("writing the session cache: %w", err)
	}
	if err := f.Close(); err != nil {
		return fmt.Errorf("writing the session cache: %w", err)
	}
	if err := os.Rename(tmp, p); err != nil {
		return fmt.Errorf("writing the session cache: %w", err)
	}
	return nil
}

// runKey is a run's session key, kept apart from the session entry so that
// it outlives a session that ended (see Manager.drop).
type runKey struct {
	SessionKey []byte `json:"sessionKey"`
}

// RunKey returns the session key for the run whose entry is under key,
// creating it on first use. One run keeps one key across its sessions: the
// broker refuses a pipeline token presented with a key other than the first.
func (c *Cache) RunKey(key string) (ed25519.PrivateKey, error) {
	var rk runKey
	found, err := c.readJSON("key-"+key, &rk)
	if err != nil {
		return nil, err
	}
	if found && len(rk.SessionKey) == ed25519.PrivateKeySize {
		return ed25519.PrivateKey(rk.SessionKey), nil
	}
	_, priv, err := ed25519.GenerateKey(rand.Reader)
	if err != nil {
		return nil, fmt.Errorf("creating the session key: %w", err)
	}
	if err := c.writeJSON("key-"+key, runKey{SessionKey: priv}); err != nil {
		return nil, err
	}
	return priv, nil
}

// Load returns the entry under key, or nil when there is none (or it has
// another format version).
func (c *Cache) Load(key string) (*Entry, error) {
	var e Entry
	found, err := c.readJSON(key, &e)
	if err != nil || !found {
		return nil, err
	}
	if e.Version != entryVersion || e.Key != key {
		return nil, nil
	}
	if len(e.SessionKey) != ed25519.PrivateKeySize {
		p, _ := c.path(key, ".json")
		return nil, fmt.Errorf("session cache file %s has no valid session key; remove it (or run `kubectl agent logout`)", p)
	}
	return &e, nil
}

// Store writes e under e.Key.
func (c *Cache) Store(e *Entry) error {
	e.Version = entryVersion
	return c.writeJSON(e.Key, e)
}

// index is an index file: an environment-derived run key pointing at an
// entry key.
type index struct {
	Entry string `json:"entry"`
}

// LoadIndex returns the entry key an index points at, or "".
func (c *Cache) LoadIndex(idxKey string) (string, error) {
	var ix index
	found, err := c.readJSON("idx-"+idxKey, &ix)
	if err != nil || !found {
		return "", err
	}
	if !keyRE.MatchString(ix.Entry) {
		return "", nil
	}
	return ix.Entry, nil
}

// StoreIndex points idxKey at entryKey.
func (c *Cache) StoreIndex(idxKey, entryKey string) error {
	return c.writeJSON("idx-"+idxKey, index{Entry: entryKey})
}

// Remove deletes an entry or index file (lock files stay: another process
// may hold or wait on them, and removing a lock file under a waiter would
// let two processes lock different inodes).
func (c *Cache) Remove(key string) error {
	p, err := c.path(key, ".json")
	if err != nil {
		return err
	}
	if err := os.Remove(p); err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("removing the session cache entry: %w", err)
	}
	return nil
}

// Lock takes the exclusive lock of key (a file beside its entry), waiting
// until ctx ends. The returned func releases it.
func (c *Cache) Lock(ctx context.Context, key string) (func(), error) {
	p, err := c.path(key, ".lock")
	if err != nil {
		return nil, err
	}
	fl := flock.New(p, flock.SetPermissions(0o600))
	ok, err := fl.TryLockContext(ctx, 10*time.Millisecond)
	if err != nil || !ok {
		if err == nil {
			err = ctx.Err()
		}
		return nil, fmt.Errorf("locking the session cache entry %s: %w", p, err)
	}
	return func() { _ = fl.Unlock() }, nil
}

// hashKey is the hex sha256 of v's JSON (struct fields in declaration
// order, map keys sorted: canonical enough for our own keys).
func hashKey(v any) string {
	b, _ := json.Marshal(v)
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// FindSession returns the cached entry of the session with this id, or nil.
// `transcript push` uses it to upload a spooled transcript with the session
// that recorded it.
func (c *Cache) FindSession(id string) (*Entry, error) {
	names, err := filepath.Glob(filepath.Join(c.Dir, "*.json"))
	if err != nil {
		return nil, err
	}
	for _, n := range names {
		key := strings.TrimSuffix(filepath.Base(n), ".json")
		if strings.HasPrefix(key, "idx-") || strings.HasPrefix(key, "key-") || !keyRE.MatchString(key) {
			continue
		}
		e, err := c.Load(key)
		if err != nil {
			return nil, err
		}
		if e != nil && e.Session.ID == id {
			return e, nil
		}
	}
	return nil, nil
}
