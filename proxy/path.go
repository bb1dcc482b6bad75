package proxy

import "errors"

// errBadPath is a request path that cannot be made canonical: a '%' not
// followed by two hex digits.
var errBadPath = errors.New("malformed percent-encoding in the path")

// canonicalPath appends to dst the form of a raw request path (as the app
// sent it, without the query) that sidekey both routes on and forwards:
//
//   - percent-encoded unreserved characters (RFC 3986 §2.3: letters,
//     digits, '-', '.', '_', '~') are decoded, every other escape is kept,
//     its hex digits upper-cased: "%2F" stays "%2F", so GitLab's
//     "projects/group%2Fproject" reaches the upstream as sent, and "%2e"
//     becomes the '.' it means;
//   - repeated slashes collapse and "." and ".." segments are removed
//     (RFC 3986 §5.2.4), so "/github/../internal/" is "/internal/", and no
//     spelling of a path can climb out of a route's prefix: a ".." cannot
//     hide behind an escape once "%2e" is decoded, and an encoded slash is
//     no separator, here or in the routing.
//
// The result starts with '/', and keeps a trailing slash. It allocates
// only when dst must grow.
func canonicalPath(dst, raw []byte) ([]byte, error) {
	start := len(dst)
	dst = append(dst, '/')
	lastDot := false // the last segment was "." or ".."
	for i := 0; i < len(raw); {
		for i < len(raw) && raw[i] == '/' {
			i++
		}
		if i == len(raw) {
			break
		}
		seg := len(dst)
		for i < len(raw) && raw[i] != '/' {
			c := raw[i]
			if c != '%' {
				dst = append(dst, c)
				i++
				continue
			}
			if i+2 >= len(raw) || !isHex(raw[i+1]) || !isHex(raw[i+2]) {
				return dst[:start], errBadPath
			}
			d := unhex(raw[i+1])<<4 | unhex(raw[i+2])
			if unreserved(d) {
				dst = append(dst, d)
			} else {
				dst = append(dst, '%', upper(raw[i+1]), upper(raw[i+2]))
			}
			i += 3
		}
		switch lastDot = true; string(dst[seg:]) {
		case ".":
			dst = dst[:seg]
		case "..":
			dst = dst[:parentEnd(dst[:seg], start)]
		default:
			dst, lastDot = append(dst, '/'), false
		}
	}
	// A trailing slash stays where the app sent one, and after a final dot
	// segment ("/a/b/.." is "/a/", RFC 3986 §5.2.4).
	if len(dst) > start+1 && !lastDot && (len(raw) == 0 || raw[len(raw)-1] != '/') {
		dst = dst[:len(dst)-1]
	}
	return dst, nil
}

// parentEnd is the length of p (which ends in '/') once its last segment
// is removed; it never goes above the root at start.
func parentEnd(p []byte, start int) int {
	n := len(p) - 1 // the slash that ends the last segment
	if n <= start {
		return start + 1
	}
	for n > start && p[n-1] != '/' {
		n--
	}
	return max(n, start+1)
}

func isHex(c byte) bool { return '0' <= c && c <= '9' || 'a' <= c && c <= 'f' || 'A' <= c && c <= 'F' }

func unhex(c byte) byte {
	switch {
	case c <= '9':
		return c - '0'
	case c >= 'a':
		return c - 'a' + 10
	}
	return c - 'A' + 10
}

func upper(c byte) byte {
	if 'a' <= c && c <= 'f' {
		return c - 'a' + 'A'
	}
	return c
}

func unreserved(c byte) bool {
	return 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9' || c == '-' || c == '.' || c == '_' || c == '~'
}
