package injector

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/hex"
	"net/http"
	"net/url"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/sidekey/sidekey/config"
)

// signTime is the fixed signing time of these tests.
var signTime = time.Date(2030, 1, 2, 3, 4, 5, 0, time.UTC)

// Test keys, assembled at run time so that no credential-shaped literal
// sits in the source.
var (
	testAccessKey    = "AKIA" + "EXAMPLE" + strings.Repeat("X", 9)
	testSecretKey    = strings.Repeat("s", 20) + "/" + strings.Repeat("K", 19)
	testSessionToken = "session-" + strings.Repeat("t", 40)
)

// signableRequest is a SignableRequest over plain data, standing in for
// the proxy's request.
type signableRequest struct {
	method   string
	url      *url.URL
	headers  [][2]string // in order, as sent
	body     []byte
	buffered bool
}

func newSignableRequest(t *testing.T, method, rawURL string, body []byte, buffered bool, headers ...string) *signableRequest {
	t.Helper()
	u, err := url.Parse(rawURL)
	if err != nil {
		t.Fatal(err)
	}
	r := &signableRequest{method: method, url: u, body: body, buffered: buffered}
	for i := 0; i+1 < len(headers); i += 2 {
		r.headers = append(r.headers, [2]string{headers[i], headers[i+1]})
	}
	return r
}

func (r *signableRequest) SetHeader(name string, value []byte) {
	r.DelHeader(name)
	r.headers = append(r.headers, [2]string{name, string(value)})
}

func (r *signableRequest) DelHeader(name string) {
	r.headers = slices.DeleteFunc(r.headers, func(h [2]string) bool { return strings.EqualFold(h[0], name) })
}

func (r *signableRequest) SetQueryArg(name string, value []byte) {
	q := r.url.Query()
	q.Set(name, string(value))
	r.url.RawQuery = q.Encode()
}

func (r *signableRequest) DelQueryArg(name string) {
	if q := r.url.Query(); q.Has(name) {
		q.Del(name)
		r.url.RawQuery = q.Encode()
	}
}

func (r *signableRequest) Method() string { return r.method }
func (r *signableRequest) URL() string    { return r.url.String() }

func (r *signableRequest) VisitHeaders(f func(name, value string)) {
	for _, h := range r.headers {
		f(h[0], h[1])
	}
}

func (r *signableRequest) BufferedBody() ([]byte, bool) { return r.body, r.buffered }

// get returns the values of a header.
func (r *signableRequest) get(name string) []string {
	var out []string
	for _, h := range r.headers {
		if strings.EqualFold(h[0], name) {
			out = append(out, h[1])
		}
	}
	return out
}

func (r *signableRequest) header(name string) string {
	v := r.get(name)
	if len(v) == 0 {
		return ""
	}
	return v[0]
}

// plainRequest is a Request that cannot be signed.
type plainRequest struct{ set map[string]string }

func (r *plainRequest) SetHeader(name string, value []byte)   { r.set[name] = string(value) }
func (r *plainRequest) DelHeader(name string)                 {}
func (r *plainRequest) SetQueryArg(name string, value []byte) { r.set["?"+name] = string(value) }
func (r *plainRequest) DelQueryArg(name string)               {}

func newTestSigV4Form(t *testing.T, region, service string) *sigV4Form {
	t.Helper()
	f, err := NewForm(config.Inject{Credential: "aws", As: config.AsSigV4, Region: region, Service: service})
	if err != nil {
		t.Fatalf("NewForm: %v", err)
	}
	sf := f.(*sigV4Form)
	sf.now = func() time.Time { return signTime }
	return sf
}

func awsSecret(session bool) *Secret {
	s := &Secret{Fields: map[string]string{"access_key": testAccessKey, "secret_key": testSecretKey}}
	if session {
		s.Fields["security_token"] = testSessionToken
	}
	return s
}

type sigV4Case struct {
	name      string
	service   string
	method    string
	url       string
	body      string
	streamed  bool
	session   bool
	headers   []string // the application's headers, name and value pairs
	unsigned  []string // of those, the ones that must stay out of the signature
	wantSHA   string
	wantToken bool
}

var emptySHA = hex.EncodeToString(sha256.New().Sum(nil))

func sigV4Cases() []sigV4Case {
	putSum := sha256.Sum256([]byte("hello, bucket"))
	return []sigV4Case{
		{name: "GET", service: "execute-api", method: "GET",
			url:      "https://abc.execute-api.eu-west-1.amazonaws.com/prod/items/a%20b/x=y?b=2&a=1&a=0&empty=&sp=x%20y",
			headers:  []string{"Accept", "application/json", "User-Agent", "legacy-app/1.0", "Connection", "keep-alive"},
			unsigned: []string{"accept", "user-agent", "connection"}, wantSHA: emptySHA},
		{name: "PUT with body", service: "s3", method: "PUT",
			url:  "https://s3.eu-west-1.amazonaws.com/bucket/dir/my%20key.txt",
			body: "hello, bucket",
			headers: []string{"Content-Type", "text/plain", "X-Amz-Meta-Owner", "  team   payments ", "X-Amz-Meta-Owner", "second",
				"Content-MD5", "bwhOp0aqM+9oSbtPX0+bIg==", "Transfer-Encoding", "chunked"},
			unsigned: []string{"transfer-encoding"}, wantSHA: hex.EncodeToString(putSum[:])},
		{name: "streamed PUT", service: "s3", method: "PUT",
			url: "https://bucket.s3.eu-west-1.amazonaws.com/big.bin", streamed: true,
			headers: []string{"Content-Type", "application/octet-stream", "X-Amz-Storage-Class", "STANDARD_IA"},
			wantSHA: unsignedPayload},
		{name: "session token", service: "sts", method: "POST",
			url: "https://sts.eu-west-1.amazonaws.com/", session: true, body: "Action=GetCallerIdentity&Version=2011-06-15",
			headers: []string{"Content-Type", "application/x-www-form-urlencoded"},
			wantSHA: func() string {
				s := sha256.Sum256([]byte("Action=GetCallerIdentity&Version=2011-06-15"))
				return hex.EncodeToString(s[:])
			}(), wantToken: true},
		{name: "host header and port", service: "s3", method: "GET",
			url:     "http://127.0.0.1:9000/bucket?list-type=2&prefix=a%2Fb",
			headers: []string{"Host", "minio.local:9000"}, wantSHA: emptySHA},
	}
}

func (c sigV4Case) request(t *testing.T) *signableRequest {
	var body []byte
	if c.body != "" {
		body = []byte(c.body)
	}
	return newSignableRequest(t, c.method, c.url, body, !c.streamed, c.headers...)
}

// TestSigV4MatchesSDK signs each request with the form and, separately,
// the same request with the SDK signer at the same time: the
// Authorization headers match.
func TestSigV4MatchesSDK(t *testing.T) {
	for _, c := range sigV4Cases() {
		t.Run(c.name, func(t *testing.T) {
			f := newTestSigV4Form(t, "eu-west-1", c.service)
			r := c.request(t)
			f.Strip(r)
			f.Apply(r, awsSecret(c.session), nil)

			u, _ := url.Parse(c.url)
			want := &http.Request{Method: c.method, URL: u, Host: u.Host, Header: http.Header{}}
			for i := 0; i+1 < len(c.headers); i += 2 {
				name, value := c.headers[i], c.headers[i+1]
				switch lower := strings.ToLower(name); {
				case lower == "host":
					want.Host = value
				case lower == "content-type" || lower == "content-md5" || strings.HasPrefix(lower, "x-amz-"):
					want.Header.Add(name, value)
				}
			}
			want.Header.Set("X-Amz-Content-Sha256", c.wantSHA)
			creds := aws.Credentials{AccessKeyID: testAccessKey, SecretAccessKey: testSecretKey}
			if c.session {
				creds.SessionToken = testSessionToken
			}
			signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = c.service == "s3" })
			if err := signer.SignHTTP(context.Background(), creds, want, c.wantSHA, c.service, "eu-west-1", signTime); err != nil {
				t.Fatal(err)
			}
			for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Content-Sha256", "X-Amz-Security-Token"} {
				if got, want := r.header(h), want.Header.Get(h); got != want {
					t.Errorf("%s = %q, want %q", h, got, want)
				}
			}
		})
	}
}

// TestSigV4Verifies checks each signed request the way AWS does, from
// the documented algorithm alone: rebuild the canonical request from what
// the proxy sends, derive the key, and compare the signature.
func TestSigV4Verifies(t *testing.T) {
	for _, c := range sigV4Cases() {
		t.Run(c.name, func(t *testing.T) {
			f := newTestSigV4Form(t, "eu-west-1", c.service)
			r := c.request(t)
			f.Strip(r)
			f.Apply(r, awsSecret(c.session), nil)

			if got := r.header("X-Amz-Date"); got != "20300102T030405Z" {
				t.Errorf("X-Amz-Date = %q", got)
			}
			if got := r.header("X-Amz-Content-Sha256"); got != c.wantSHA {
				t.Errorf("X-Amz-Content-Sha256 = %q, want %q", got, c.wantSHA)
			}
			if got := r.header("X-Amz-Security-Token"); c.wantToken && got != testSessionToken || !c.wantToken && got != "" {
				t.Errorf("X-Amz-Security-Token = %q, want it set: %v", got, c.wantToken)
			}
			signed := verifySigV4(t, r, testSecretKey, c.service == "s3", c.wantSHA)
			for _, h := range c.unsigned {
				if slices.Contains(signed, h) {
					t.Errorf("header %s is signed", h)
				}
			}
			for _, h := range []string{"host", "x-amz-date", "x-amz-content-sha256"} {
				if !slices.Contains(signed, h) {
					t.Errorf("header %s is not signed", h)
				}
			}
			if c.wantToken && !slices.Contains(signed, "x-amz-security-token") {
				t.Error("the session token is not signed")
			}
		})
	}
}

// verifySigV4 checks r's Authorization header as an AWS endpoint would,
// following the SigV4 documentation, and returns the signed header names.
// s3 selects S3's canonical URI (the path as sent, not escaped again).
func verifySigV4(t *testing.T, r *signableRequest, secretKey string, s3 bool, payloadHash string) []string {
	t.Helper()
	auth := r.header("Authorization")
	const algorithm = "AWS4-HMAC-SHA256"
	rest, ok := strings.CutPrefix(auth, algorithm+" ")
	if !ok {
		t.Fatalf("Authorization %q is not %s", auth, algorithm)
	}
	parts := map[string]string{}
	for p := range strings.SplitSeq(rest, ", ") {
		k, v, _ := strings.Cut(p, "=")
		parts[k] = v
	}
	cred := strings.Split(parts["Credential"], "/")
	if len(cred) != 5 || cred[4] != "aws4_request" {
		t.Fatalf("Credential %q is malformed", parts["Credential"])
	}
	if cred[0] != testAccessKey {
		t.Errorf("Credential names access key %q", cred[0])
	}
	date, region, service := cred[1], cred[2], cred[3]
	signedHeaders := strings.Split(parts["SignedHeaders"], ";")
	host := r.header("Host")
	if host == "" {
		host = r.url.Host
	}
	canonical := canonicalRequest(r.method, r.url, host, r.headers, signedHeaders, payloadHash, s3)
	sig := signatureV4(secretKey, date, region, service, r.header("X-Amz-Date"), canonical)
	if sig != parts["Signature"] {
		t.Errorf("signature does not verify:\n got  %s\n want %s\ncanonical request:\n%s", parts["Signature"], sig, canonical)
	}
	return signedHeaders
}

// canonicalRequest builds a SigV4 canonical request as the AWS
// documentation describes it.
func canonicalRequest(method string, u *url.URL, host string, headers [][2]string, signed []string, payloadHash string, s3 bool) string {
	path := u.EscapedPath()
	if path == "" {
		path = "/"
	}
	if !s3 {
		path = awsURIEncode(path, false) // every service but S3 encodes the path twice
	}
	var query []string
	if u.RawQuery != "" {
		for kv := range strings.SplitSeq(u.RawQuery, "&") {
			k, v, _ := strings.Cut(kv, "=")
			k, _ = url.PathUnescape(k)
			v, _ = url.PathUnescape(v)
			query = append(query, awsURIEncode(k, true)+"="+awsURIEncode(v, true))
		}
	}
	slices.Sort(query)
	var hdrs strings.Builder
	for _, name := range signed {
		var values []string
		if name == "host" {
			values = []string{host}
		}
		for _, h := range headers {
			if strings.EqualFold(h[0], name) && name != "host" {
				values = append(values, strings.Join(strings.Fields(h[1]), " "))
			}
		}
		hdrs.WriteString(name + ":" + strings.Join(values, ",") + "\n")
	}
	return strings.Join([]string{method, path, strings.Join(query, "&"), hdrs.String(),
		strings.Join(signed, ";"), payloadHash}, "\n")
}

// awsURIEncode encodes every byte but the unreserved ones (RFC 3986), and
// '/' unless slash is set.
func awsURIEncode(s string, slash bool) string {
	var b strings.Builder
	for i := 0; i < len(s); i++ {
		c := s[i]
		switch {
		case 'A' <= c && c <= 'Z', 'a' <= c && c <= 'z', '0' <= c && c <= '9', c == '-', c == '.', c == '_', c == '~':
			b.WriteByte(c)
		case c == '/' && !slash:
			b.WriteByte(c)
		default:
			b.WriteString("%" + strings.ToUpper(hex.EncodeToString([]byte{c})))
		}
	}
	return b.String()
}

// signatureV4 derives the signing key and signs the string to sign.
func signatureV4(secretKey, date, region, service, amzDate, canonical string) string {
	sum := sha256.Sum256([]byte(canonical))
	scope := date + "/" + region + "/" + service + "/aws4_request"
	toSign := "AWS4-HMAC-SHA256\n" + amzDate + "\n" + scope + "\n" + hex.EncodeToString(sum[:])
	return hex.EncodeToString(hmacSHA256(signingKeyV4(secretKey, date, region, service), toSign))
}

func signingKeyV4(secretKey, date, region, service string) []byte {
	k := hmacSHA256([]byte("AWS4"+secretKey), date)
	k = hmacSHA256(k, region)
	k = hmacSHA256(k, service)
	return hmacSHA256(k, "aws4_request")
}

func hmacSHA256(key []byte, data string) []byte {
	m := hmac.New(sha256.New, key)
	m.Write([]byte(data))
	return m.Sum(nil)
}

// TestSigV4VerifierKnownAnswer pins the test's own verifier to the worked
// example of the AWS documentation (IAM ListUsers, 2015-08-30), so that a
// mistake shared by the verifier and the signer cannot pass unnoticed.
func TestSigV4VerifierKnownAnswer(t *testing.T) {
	docSecret := "wJalrXUtnFEMI/K7MDENG" + "+bPxRfiCY" + "EXAMPLEKEY"
	key := hex.EncodeToString(signingKeyV4(docSecret, "20150830", "us-east-1", "iam"))
	if key != "c4afb1cc5771d871763a393e44b703571b55cc28424d1a5e86da6ed3c154a4b9" {
		t.Errorf("signing key = %s", key)
	}
	u, _ := url.Parse("https://iam.amazonaws.com/?Action=ListUsers&Version=2010-05-08")
	headers := [][2]string{{"Content-Type", "application/x-www-form-urlencoded; charset=utf-8"}, {"X-Amz-Date", "20150830T123600Z"}}
	canonical := canonicalRequest("GET", u, "iam.amazonaws.com", headers,
		[]string{"content-type", "host", "x-amz-date"}, emptySHA, false)
	if sum := sha256.Sum256([]byte(canonical)); hex.EncodeToString(sum[:]) != "f536975d06c0309214f805bb90ccff089219ecd68b2577efef23edd43b7e1a59" {
		t.Errorf("canonical request hash differs from the documented one:\n%s", canonical)
	}
	sig := signatureV4(docSecret, "20150830", "us-east-1", "iam", "20150830T123600Z", canonical)
	if sig != "5d672d79c15b13162d9279b0855cfba6789a8edb4c82c400e06b5924a6f2b5d7" {
		t.Errorf("signature = %s", sig)
	}
}

func TestSigV4StripsApplicationCredentials(t *testing.T) {
	f := newTestSigV4Form(t, "eu-west-1", "s3")
	appKey := "AKIA" + "APPLICATION" + strings.Repeat("Y", 5)
	r := newSignableRequest(t, "GET",
		"https://s3.eu-west-1.amazonaws.com/bucket/key?X-Amz-Algorithm=AWS4-HMAC-SHA256&X-Amz-Credential="+appKey+
			"%2F20300101%2Feu-west-1%2Fs3%2Faws4_request&X-Amz-Signature=abc&X-Amz-SignedHeaders=host&X-Amz-Date=20300101T000000Z&X-Amz-Expires=60&versionId=7",
		nil, true,
		"Authorization", "AWS4-HMAC-SHA256 Credential="+appKey+"/20300101/eu-west-1/s3/aws4_request, SignedHeaders=host, Signature=abc",
		"X-Amz-Date", "20300101T000000Z",
		"X-Amz-Security-Token", "app-session",
		"X-Amz-Content-Sha256", "app-hash",
		"X-Amz-Meta-Kept", "yes")
	f.Strip(r)
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"} {
		if v := r.get(h); len(v) != 0 {
			t.Errorf("Strip left %s: %q", h, v)
		}
	}
	if r.url.RawQuery != "versionId=7" {
		t.Errorf("Strip left query %q, want only versionId", r.url.RawQuery)
	}
	if r.header("X-Amz-Meta-Kept") != "yes" {
		t.Error("Strip removed an ordinary x-amz header")
	}

	f.Apply(r, awsSecret(false), nil)
	all := ""
	r.VisitHeaders(func(name, value string) { all += name + ": " + value + "\n" })
	for _, s := range []string{appKey, "app-session", "app-hash", "20300101T000000Z"} {
		if strings.Contains(all, s) || strings.Contains(r.URL(), s) {
			t.Errorf("the application's %q survived:\n%s", s, all)
		}
	}
	for _, h := range []string{"Authorization", "X-Amz-Date", "X-Amz-Content-Sha256"} {
		if n := len(r.get(h)); n != 1 {
			t.Errorf("%d %s headers, want 1", n, h)
		}
	}
	verifySigV4(t, r, testSecretKey, true, emptySHA)
}

// Apply on its own, without Strip, still never signs nor keeps the
// application's own signing headers.
func TestSigV4ApplyWithoutStrip(t *testing.T) {
	f := newTestSigV4Form(t, "eu-west-1", "s3")
	r := newSignableRequest(t, "GET", "https://s3.eu-west-1.amazonaws.com/bucket/key", nil, true,
		"Authorization", "Bearer app", "X-Amz-Security-Token", "app-session", "X-Amz-Date", "20300101T000000Z")
	f.Apply(r, awsSecret(false), nil)
	if v := r.get("X-Amz-Security-Token"); len(v) != 0 {
		t.Errorf("X-Amz-Security-Token = %q, want none without a session token", v)
	}
	if strings.Contains(r.header("Authorization"), "x-amz-security-token") {
		t.Error("the application's session token was signed")
	}
	verifySigV4(t, r, testSecretKey, true, emptySHA)
}

func TestSigV4SecretFieldNames(t *testing.T) {
	f := newTestSigV4Form(t, "us-east-1", "s3")
	vault := &Secret{Fields: map[string]string{"access_key": testAccessKey, "secret_key": testSecretKey, "security_token": testSessionToken}}
	long := &Secret{Fields: map[string]string{"access_key_id": testAccessKey, "secret_access_key": testSecretKey, "session_token": testSessionToken}}
	for name, s := range map[string]*Secret{"vault": vault, "long names": long} {
		t.Run(name, func(t *testing.T) {
			r := newSignableRequest(t, "GET", "https://s3.amazonaws.com/bucket", nil, true)
			f.Apply(r, s, nil)
			if r.header("X-Amz-Security-Token") != testSessionToken {
				t.Error("session token not sent")
			}
			verifySigV4(t, r, testSecretKey, true, emptySHA)
		})
	}
}

func TestSigV4LeavesUnsigned(t *testing.T) {
	f := newTestSigV4Form(t, "eu-west-1", "s3")
	t.Run("not signable", func(t *testing.T) {
		r := &plainRequest{set: map[string]string{}}
		f.Apply(r, awsSecret(true), nil)
		if len(r.set) != 0 {
			t.Errorf("Apply set %v on a request it cannot sign", r.set)
		}
	})
	for name, s := range map[string]*Secret{
		"no secret key": {Fields: map[string]string{"access_key": testAccessKey}},
		"no access key": {Fields: map[string]string{"secret_key": testSecretKey}},
		"no fields":     {Value: "token"},
	} {
		t.Run(name, func(t *testing.T) {
			r := newSignableRequest(t, "GET", "https://s3.amazonaws.com/bucket", nil, true)
			f.Apply(r, s, nil)
			if len(r.headers) != 0 {
				t.Errorf("Apply set %v without complete keys", r.headers)
			}
		})
	}
}

func TestNewFormSigV4(t *testing.T) {
	for _, in := range []config.Inject{
		{As: config.AsSigV4, Service: "s3"},
		{As: config.AsSigV4, Region: "eu-west-1"},
	} {
		if _, err := NewForm(in); err == nil {
			t.Errorf("NewForm(%+v) succeeded", in)
		}
	}
	f, err := NewForm(config.Inject{As: config.AsSigV4, Region: "eu-west-1", Service: "s3"})
	if err != nil {
		t.Fatal(err)
	}
	if !NeedsSignableRequest(f) {
		t.Error("NeedsSignableRequest(aws-sigv4) = false")
	}
	if b, _ := NewForm(config.Inject{As: config.AsBearer}); NeedsSignableRequest(b) {
		t.Error("NeedsSignableRequest(bearer) = true")
	}
}

// One form signs for many requests at once; its signer's key cache is
// shared.
func TestSigV4Concurrent(t *testing.T) {
	f := newTestSigV4Form(t, "eu-west-1", "s3")
	var wg sync.WaitGroup
	for range 8 {
		wg.Go(func() {
			var scratch []byte
			for range 20 {
				r := newSignableRequest(t, "PUT", "https://s3.eu-west-1.amazonaws.com/b/k", []byte("x"), true)
				scratch = f.Apply(r, awsSecret(true), scratch)
				sum := sha256.Sum256([]byte("x"))
				verifySigV4(t, r, testSecretKey, true, hex.EncodeToString(sum[:]))
			}
		})
	}
	wg.Wait()
}
