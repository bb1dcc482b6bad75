package injector

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"hash"
	"slices"
)

// fingerprintLen is the length of a fingerprint in hex digits (64 bits).
const fingerprintLen = 16

// fingerprint is a short HMAC-SHA256 of s's Value and Fields under key, in
// hex: it tells versions apart within one process, where the key is drawn
// at start-up, and reveals nothing across processes. Each part is length-
// prefixed and the fields go in sorted key order, so distinct secrets
// cannot encode alike and a map's order does not matter. The holder
// computes it once per fetched value, never per request.
func fingerprint(key []byte, s *Secret) string {
	m := hmac.New(sha256.New, key)
	writePart(m, s.Value)
	keys := make([]string, 0, len(s.Fields))
	for k := range s.Fields {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		writePart(m, k)
		writePart(m, s.Fields[k])
	}
	return hex.EncodeToString(m.Sum(nil))[:fingerprintLen]
}

func writePart(h hash.Hash, s string) {
	var n [8]byte
	binary.BigEndian.PutUint64(n[:], uint64(len(s)))
	h.Write(n[:])
	h.Write([]byte(s))
}
