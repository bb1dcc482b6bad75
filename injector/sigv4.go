package injector

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"net/http"
	"net/url"
	"strings"
	"time"

	"github.com/aws/aws-sdk-go-v2/aws"
	v4 "github.com/aws/aws-sdk-go-v2/aws/signer/v4"

	"github.com/sidekey/sidekey/config"
)

// SignableRequest is what aws-sigv4 needs beyond Request: the request line,
// the headers to sign, and the body's hash when it is buffered.
//
// Every method reports the request as it will be sent upstream, after
// Strip and after every other edit the proxy makes: a header changed after
// signing breaks the signature.
type SignableRequest interface {
	Request
	Method() string
	URL() string                           // absolute URL as sent upstream, e.g. https://s3.eu-west-1.amazonaws.com/bucket/key?x=1
	VisitHeaders(func(name, value string)) // headers as they will be sent
	BufferedBody() ([]byte, bool)          // body when fully buffered; false when streamed
}

// unsignedPayload is the payload hash of a body that is not signed.
const unsignedPayload = "UNSIGNED-PAYLOAD"

// Headers an aws-sigv4 form sets, and so strips from the application's
// request.
var sigV4Headers = [...]string{"Authorization", "X-Amz-Date", "X-Amz-Security-Token", "X-Amz-Content-Sha256"}

// Query parameters of a presigned URL: an application could otherwise bring
// a credential of its own in the query.
var sigV4QueryArgs = [...]string{
	"X-Amz-Algorithm", "X-Amz-Credential", "X-Amz-Date", "X-Amz-Expires",
	"X-Amz-Security-Token", "X-Amz-Signature", "X-Amz-SignedHeaders",
}

// sigV4Form signs requests with AWS Signature Version 4 in the
// Authorization header. The secret holds "access_key" (or
// "access_key_id"), "secret_key" (or "secret_access_key") and optionally
// "session_token" (or "security_token"), as Vault's aws/creds returns them.
//
// Headers signed: host, content-type, content-md5 and every x-amz-* one;
// others (user-agent, hop-by-hop headers) may change on the way without
// breaking the signature. The payload hash is the SHA-256 of a buffered
// body; a streamed body is sent as UNSIGNED-PAYLOAD, which S3 accepts but
// most other services refuse: those need the proxy to buffer the body.
//
// Apply signs only a SignableRequest with complete keys; otherwise it
// leaves the request unsigned (the upstream then refuses it) rather than
// send it with a credential the application chose. Passing a Request that
// is not a SignableRequest is a programming error in the proxy.
//
// A sigV4Form is immutable and safe for concurrent use; its signer caches
// the derived signing key per day.
type sigV4Form struct {
	region, service string
	signer          *v4.Signer
	now             func() time.Time // nil: time.Now; tests fix it
}

func newSigV4Form(in config.Inject) (Form, error) {
	if in.Region == "" || in.Service == "" {
		return nil, errors.New("aws-sigv4 needs a region and a service")
	}
	// S3 signs the path as sent; every other service escapes it once more
	// (as the AWS SDKs do).
	s3 := in.Service == "s3" || strings.HasPrefix(in.Service, "s3-")
	signer := v4.NewSigner(func(o *v4.SignerOptions) { o.DisableURIPathEscaping = s3 })
	return &sigV4Form{region: in.Region, service: in.Service, signer: signer}, nil
}

// NeedsSignableRequest reports whether f signs requests, so that the proxy
// must hand its Apply a SignableRequest, with the body buffered where the
// service needs it signed.
func NeedsSignableRequest(f Form) bool {
	_, ok := f.(*sigV4Form)
	return ok
}

func (f *sigV4Form) Strip(r Request) {
	for _, h := range sigV4Headers {
		r.DelHeader(h)
	}
	for _, q := range sigV4QueryArgs {
		r.DelQueryArg(q)
	}
}

func (f *sigV4Form) Apply(r Request, s *Secret, b []byte) []byte {
	sr, ok := r.(SignableRequest)
	if !ok {
		return b
	}
	creds, ok := sigV4Credentials(s)
	if !ok {
		return b
	}
	req, err := signingRequest(sr)
	if err != nil {
		return b
	}
	payload := unsignedPayload
	if body, ok := sr.BufferedBody(); ok {
		sum := sha256.Sum256(body)
		payload = hex.EncodeToString(sum[:])
	}
	req.Header.Set("X-Amz-Content-Sha256", payload)
	if err := f.signer.SignHTTP(context.Background(), creds, req, payload, f.service, f.region, f.clock()); err != nil {
		return b
	}
	for _, h := range sigV4Headers {
		v := req.Header.Get(h)
		if v == "" {
			r.DelHeader(h) // no session token: none of the application's
			continue
		}
		b = append(b[:0], v...)
		r.SetHeader(h, b)
	}
	return b
}

func (f *sigV4Form) clock() time.Time {
	if f.now != nil {
		return f.now()
	}
	return time.Now()
}

// sigV4Credentials reads the keys from a secret; false when one is missing.
func sigV4Credentials(s *Secret) (aws.Credentials, bool) {
	c := aws.Credentials{
		AccessKeyID:     firstField(s, "access_key", "access_key_id"),
		SecretAccessKey: firstField(s, "secret_key", "secret_access_key"),
		SessionToken:    firstField(s, "session_token", "security_token"),
	}
	return c, c.AccessKeyID != "" && c.SecretAccessKey != ""
}

func firstField(s *Secret, names ...string) string {
	for _, n := range names {
		if v := s.Fields[n]; v != "" {
			return v
		}
	}
	return ""
}

// signingRequest builds the request the signer sees: the request line and
// the headers to sign, as they will be sent. A Host header, when the
// request has one, overrides the URL's host.
func signingRequest(sr SignableRequest) (*http.Request, error) {
	u, err := url.Parse(sr.URL())
	if err != nil {
		return nil, err
	}
	req := &http.Request{Method: sr.Method(), URL: u, Host: u.Host, Header: make(http.Header, 4)}
	sr.VisitHeaders(func(name, value string) {
		switch {
		case strings.EqualFold(name, "Host"):
			req.Host = value
		case isSigV4Header(name):
			// Set by Apply itself, never taken from the application.
		case signsHeader(name):
			req.Header.Add(name, value)
		}
	})
	return req, nil
}

// signsHeader reports whether a header is signed: content-type,
// content-md5 and x-amz-*.
func signsHeader(name string) bool {
	const amz = "x-amz-"
	return strings.EqualFold(name, "Content-Type") || strings.EqualFold(name, "Content-Md5") ||
		(len(name) > len(amz) && strings.EqualFold(name[:len(amz)], amz))
}

func isSigV4Header(name string) bool {
	for _, h := range sigV4Headers {
		if strings.EqualFold(name, h) {
			return true
		}
	}
	return false
}
