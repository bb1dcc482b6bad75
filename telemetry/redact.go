package telemetry

import (
	"bytes"
	"fmt"
	"io"
	"slices"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/sirupsen/logrus"
)

// Mask replaces a secret value wherever the Redactor finds it.
const Mask = "[REDACTED]"

// Redactor holds the set of live secret values and removes them from log
// entries (as a logrus hook) and from formatted output (as an io.Writer
// wrapper). Add and Remove are reference-counted: a value added twice stays
// until removed twice. All methods are safe for concurrent use; the read
// path is one atomic load.
type Redactor struct {
	mu     sync.Mutex
	counts map[string]int
	live   atomic.Pointer[liveSet] // immutable
}

// liveSet is the published list of values. Values are looked for longest
// first, so that a secret containing another is masked whole; and only when
// their first MinSecretLen bytes occur at all, looked for once per distinct
// prefix. Successive values of one credential mostly share a prefix (a JWT
// header, a "ghp_" or "hvs." tag), so a text is scanned about once per
// credential, not once per value.
type liveSet struct {
	values   []string // longest first
	group    []int    // values[i]'s prefix, an index into prefixes
	prefixes []string
	// The same as bytes, so that Bytes converts nothing per call.
	valuesB, prefixesB [][]byte
}

// NewRedactor returns an empty Redactor.
func NewRedactor() *Redactor {
	r := &Redactor{counts: map[string]int{}}
	r.live.Store(&liveSet{})
	return r
}

// MinSecretLen is the shortest value the Redactor masks. Multi-field
// secrets carry short non-secret parts ("ec", "rsa", "true"); masking those
// would garble every log line while protecting nothing a credential is made
// of.
const MinSecretLen = 6

// Add registers secret values. Values shorter than MinSecretLen are ignored.
func (r *Redactor) Add(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		if len(v) >= MinSecretLen {
			r.counts[v]++
		}
	}
	r.publish()
}

// Remove unregisters secret values added before.
func (r *Redactor) Remove(values ...string) {
	r.mu.Lock()
	defer r.mu.Unlock()
	for _, v := range values {
		if r.counts[v] > 1 {
			r.counts[v]--
		} else {
			delete(r.counts, v)
		}
	}
	r.publish()
}

// publish rebuilds the immutable list; longest first so that a secret that
// contains another is masked whole. Called with mu held.
//
// It runs at every rotation (twice: the new value added, an old one
// removed), so it allocates only the three slices, each at its final size;
// the prefixes are few (about one per credential), found by a linear scan.
func (r *Redactor) publish() {
	n := len(r.counts)
	ls := &liveSet{values: make([]string, 0, n), group: make([]int, 0, n)}
	for v := range r.counts {
		ls.values = append(ls.values, v)
	}
	sortLongestFirst(ls.values)
	prefixes := make([]string, 0, n)
	for _, v := range ls.values {
		p := v[:MinSecretLen]
		i := slices.Index(prefixes, p)
		if i < 0 {
			i = len(prefixes)
			prefixes = append(prefixes, p)
		}
		ls.group = append(ls.group, i)
	}
	ls.prefixes = prefixes
	ls.valuesB, ls.prefixesB = asBytes(ls.values), asBytes(prefixes)
	r.live.Store(ls)
}

// maxPrefixes bounds the prefixes looked up on the stack; a set with more
// falls back to looking for every value.
const maxPrefixes = 64

func asBytes(ss []string) [][]byte {
	out := make([][]byte, len(ss))
	for i, s := range ss {
		out[i] = []byte(s)
	}
	return out
}

func sortLongestFirst(s []string) {
	for i := 1; i < len(s); i++ {
		for j := i; j > 0 && len(s[j]) > len(s[j-1]); j-- {
			s[j], s[j-1] = s[j-1], s[j]
		}
	}
}

// String returns s with every live secret replaced by Mask.
func (r *Redactor) String(s string) string {
	ls := r.live.Load()
	return scrub(ls, s, ls.prefixes, ls.values, strings.Contains, strings.ReplaceAll, Mask)
}

// Bytes returns b with every live secret replaced by Mask. It returns b
// itself when b holds none, and then allocates nothing.
func (r *Redactor) Bytes(b []byte) []byte {
	ls := r.live.Load()
	return scrub(ls, b, ls.prefixesB, ls.valuesB, bytes.Contains, bytes.ReplaceAll, maskBytes)
}

var maskBytes = []byte(Mask)

// Contains reports whether b holds a live secret. It allocates nothing and
// looks for a whole value only where its prefix occurs: about one search
// per credential, on the path of every response header.
func (r *Redactor) Contains(b []byte) bool {
	if len(b) < MinSecretLen {
		return false
	}
	ls := r.live.Load()
	if len(ls.prefixesB) > maxPrefixes {
		for _, v := range ls.valuesB {
			if bytes.Contains(b, v) {
				return true
			}
		}
		return false
	}
	for i, p := range ls.prefixesB {
		if !bytes.Contains(b, p) {
			continue
		}
		for j, v := range ls.valuesB {
			if ls.group[j] == i && bytes.Contains(b, v) {
				return true
			}
		}
	}
	return false
}

// Pending is how many bytes at the end of b could be the start of a live
// secret that continues past it: a stream scrubbed piece by piece holds
// those back until the next piece shows whether they are one. 0 when no
// live secret starts within b's tail.
func (r *Redactor) Pending(b []byte) int {
	ls := r.live.Load()
	hold := 0
	for _, v := range ls.valuesB {
		for i := max(0, len(b)-len(v)+1); i < len(b)-hold; i++ {
			if b[i] == v[0] && bytes.HasPrefix(v, b[i:]) {
				hold = len(b) - i
				break
			}
		}
	}
	return hold
}

// scrub replaces every value of ls in t with mask, longest first, looking
// for a value only where its prefix occurs; prefixes and values are ls's
// in t's type, contains and replaceAll those of package strings or bytes.
func scrub[T string | []byte](ls *liveSet, t T, prefixes, values []T, contains func(T, T) bool, replaceAll func(T, T, T) T, mask T) T {
	var seen [maxPrefixes]bool
	few := len(prefixes) <= maxPrefixes
	if few {
		for i, p := range prefixes {
			seen[i] = contains(t, p)
		}
	}
	for i, v := range values {
		if few && !seen[ls.group[i]] {
			continue
		}
		if contains(t, v) {
			t = replaceAll(t, v, mask)
		}
	}
	return t
}

// Levels implements logrus.Hook: every level.
func (r *Redactor) Levels() []logrus.Level { return logrus.AllLevels }

// Fire implements logrus.Hook: it scrubs the message and every field. Fields
// that are not strings are rendered with fmt first when they hold a secret.
func (r *Redactor) Fire(e *logrus.Entry) error {
	e.Message = r.String(e.Message)
	for k, v := range e.Data {
		e.Data[k] = r.value(v)
	}
	return nil
}

func (r *Redactor) value(v any) any {
	switch x := v.(type) {
	case string:
		return r.String(x)
	case []byte:
		// JSON would encode bytes as base64, hiding a secret from the writer.
		return r.String(string(x))
	case nil, bool, int, int64, uint64, float64:
		return v
	case error:
		if s := x.Error(); r.String(s) != s {
			return r.String(s)
		}
		return v
	}
	s := fmt.Sprint(v)
	if red := r.String(s); red != s {
		return red
	}
	return v
}

// Writer wraps w so that every write is scrubbed: a last line of defence for
// output that did not pass through Fire (a formatter escaping a value, a
// library writing to the log directly).
func (r *Redactor) Writer(w io.Writer) io.Writer { return redactingWriter{r: r, w: w} }

type redactingWriter struct {
	r *Redactor
	w io.Writer
}

func (rw redactingWriter) Write(p []byte) (int, error) {
	if _, err := rw.w.Write(rw.r.Bytes(p)); err != nil {
		return 0, err
	}
	return len(p), nil
}
