package transcript

import (
	"crypto/ed25519"
	"crypto/sha256"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"strconv"
)

// DigestPrefix starts every digest string in a transcript.
const DigestPrefix = "sha256:"

// LineDigest is "sha256:<hex>" of one line's exact bytes, without its newline.
func LineDigest(line []byte) string {
	sum := sha256.Sum256(line)
	return DigestPrefix + hex.EncodeToString(sum[:])
}

// EncodePublicKey is the session key as it appears in a start event and in a
// JWK's "x": raw 32 bytes, unpadded base64url.
func EncodePublicKey(pub ed25519.PublicKey) string {
	return base64.RawURLEncoding.EncodeToString(pub)
}

// DecodePublicKey parses EncodePublicKey's form. Decoding is strict so that
// no two strings name the same key.
func DecodePublicKey(s string) (ed25519.PublicKey, error) {
	b, err := base64.RawURLEncoding.Strict().DecodeString(s)
	if err != nil {
		return nil, fmt.Errorf("public key is not unpadded base64url: %w", err)
	}
	if len(b) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("public key has %d bytes, an ed25519 key has %d", len(b), ed25519.PublicKeySize)
	}
	return ed25519.PublicKey(b), nil
}

// Thumbprint is the RFC 7638 JWK thumbprint (SHA-256, unpadded base64url) of
// an ed25519 public key. It is the DSSE keyid of a seal and the kid of a
// broker key.
func Thumbprint(pub ed25519.PublicKey) string {
	// RFC 7638: the required members in lexicographic order, no whitespace.
	canon := `{"crv":"Ed25519","kty":"OKP","x":"` + EncodePublicKey(pub) + `"}`
	sum := sha256.Sum256([]byte(canon))
	return base64.RawURLEncoding.EncodeToString(sum[:])
}

// CheckpointMessage is what a checkpoint signature covers. The session id is
// in it so that a checkpoint cannot be moved into another session's
// transcript that happens to use the same key.
func CheckpointMessage(sessionID string, upTo int64, digest string) []byte {
	return []byte("kubectl-agent checkpoint v1\n" + sessionID + "\n" + strconv.FormatInt(upTo, 10) + "\n" + digest)
}

// signCheckpoint returns the base64url signature of a checkpoint.
func signCheckpoint(key ed25519.PrivateKey, sessionID string, upTo int64, digest string) string {
	return base64.RawURLEncoding.EncodeToString(ed25519.Sign(key, CheckpointMessage(sessionID, upTo, digest)))
}
