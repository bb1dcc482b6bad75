package injector

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"mime"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/sidekey/sidekey/config"
)

// OAuth2 client authentication styles (RFC 6749 §2.3.1).
const (
	// AuthStyleBasic sends the client ID and secret as HTTP Basic
	// credentials, each form-urlencoded first.
	AuthStyleBasic = "basic"
	// AuthStylePost sends client_id and client_secret in the form body.
	AuthStylePost = "post"
)

const (
	// defaultOAuth2Timeout bounds one call to the token or revocation
	// endpoint when OAuth2Source has no HTTPClient.
	defaultOAuth2Timeout = 30 * time.Second
	// maxOAuth2Response bounds what is read of an endpoint's answer.
	maxOAuth2Response = 1 << 20
	// maxOAuth2ErrorText bounds the error and error_description an error
	// message quotes.
	maxOAuth2ErrorText = 200
)

// OAuth2Source fetches access tokens with the client credentials grant
// (RFC 6749 §4.4) and revokes superseded ones (RFC 7009).
//
// Configure it through the exported fields before the first Fetch and do
// not change them afterwards. Fetch and Revoke are safe for concurrent use
// when ClientSecret is.
//
// Errors never contain the client secret, a token or an endpoint's response
// body: a refused request is reported by its HTTP status and the OAuth2
// "error" and "error_description" fields (RFC 6749 §5.2), quoted and cut
// short.
type OAuth2Source struct {
	// TokenURL is the token endpoint.
	TokenURL string
	// ClientID identifies the client.
	ClientID string
	// ClientSecret yields the client secret as its Value. It is fetched
	// again for every call, so a rotated client secret is followed; nil
	// sends no secret.
	ClientSecret Source
	// Scopes are requested as the space-separated "scope" parameter.
	Scopes []string
	// Audience, when set, is sent as the "audience" parameter.
	Audience string
	// Params are further token-request parameters. They cannot replace a
	// parameter the source sets itself.
	Params map[string]string
	// AuthStyle is AuthStyleBasic (also when empty) or AuthStylePost.
	AuthStyle string
	// RevocationURL, when set, is the RFC 7009 revocation endpoint; when
	// empty, Revoke does nothing.
	RevocationURL string
	// HTTPClient makes the calls; nil is a client with a 30s timeout that
	// verifies TLS and follows no redirects.
	HTTPClient *http.Client
	// Now is the source of time; nil is time.Now.
	Now func() time.Time
}

var _ Revoker = (*OAuth2Source)(nil)

// newOAuth2Source builds the OAuth2Source of a configured credential.
func newOAuth2Source(c config.Credential) (Source, error) {
	switch {
	case c.TokenURL == "":
		return nil, fmt.Errorf("credential %q: oauth2 source needs a token_url", c.Name)
	case c.ClientID == "":
		return nil, fmt.Errorf("credential %q: oauth2 source needs a client_id", c.Name)
	case c.ClientSecret == nil:
		return nil, fmt.Errorf("credential %q: oauth2 source needs a client_secret", c.Name)
	case c.AuthStyle != "" && c.AuthStyle != AuthStyleBasic && c.AuthStyle != AuthStylePost:
		return nil, fmt.Errorf("credential %q: auth_style %q is neither basic nor post", c.Name, c.AuthStyle)
	}
	secret, err := RefSource(*c.ClientSecret)
	if err != nil {
		return nil, fmt.Errorf("credential %q: client_secret: %w", c.Name, err)
	}
	return &OAuth2Source{
		TokenURL:      c.TokenURL,
		ClientID:      c.ClientID,
		ClientSecret:  secret,
		Scopes:        c.Scopes,
		Audience:      c.Audience,
		Params:        c.Params,
		AuthStyle:     c.AuthStyle,
		RevocationURL: c.RevocationURL,
	}, nil
}

// tokenResponse is the part of a token endpoint's answer (RFC 6749 §5.1)
// that the source uses. token_type and scope are not checked: the route's
// injection form says how the token is sent.
type tokenResponse struct {
	AccessToken string    `json:"access_token"`
	ExpiresIn   expiresIn `json:"expires_in"`
	// Error is an error code some servers send with a 2xx status.
	Error string `json:"error"`
}

// expiresIn is a number of seconds, sent by some servers as a string.
type expiresIn float64

func (e *expiresIn) UnmarshalJSON(b []byte) error {
	b = bytes.Trim(b, `"`)
	if len(b) == 0 || string(b) == "null" {
		*e = 0
		return nil
	}
	v, err := strconv.ParseFloat(string(b), 64)
	if err != nil || math.IsNaN(v) || v < 0 || v > 1e11 {
		return errors.New(`"expires_in" is not a number of seconds`)
	}
	*e = expiresIn(v)
	return nil
}

// errorResponse is an OAuth2 error answer (RFC 6749 §5.2, RFC 7009 §2.2.1).
type errorResponse struct {
	Error       string `json:"error"`
	Description string `json:"error_description"`
}

// Fetch requests a new access token. The Secret's Value and Handle are
// the token; IssuedAt is when the request was sent and ExpiresAt that
// plus expires_in (zero, never, when the answer has none), so the value
// is never believed valid longer than the server holds it.
func (s *OAuth2Source) Fetch(ctx context.Context) (*Secret, error) {
	form := url.Values{}
	for k, v := range s.Params {
		form.Set(k, v)
	}
	form.Set("grant_type", "client_credentials")
	if len(s.Scopes) > 0 {
		form.Set("scope", strings.Join(s.Scopes, " "))
	}
	if s.Audience != "" {
		form.Set("audience", s.Audience)
	}
	sent := s.now()
	body, err := s.post(ctx, "token", s.TokenURL, form)
	if err != nil {
		return nil, err
	}
	defer clear(body) // the token response: once parsed, the Secret's strings are the only copies left
	tr, err := parseTokenResponse(body)
	if err != nil {
		return nil, fmt.Errorf("requesting oauth2 token: %w", err)
	}
	sec := &Secret{Value: tr.AccessToken, IssuedAt: sent, Handle: tr.AccessToken}
	if tr.ExpiresIn > 0 {
		sec.ExpiresAt = sent.Add(time.Duration(float64(tr.ExpiresIn) * float64(time.Second)))
	}
	return sec, nil
}

// Revoke revokes the access token of s at RevocationURL (RFC 7009), with
// the same client authentication as Fetch. Without a RevocationURL it
// does nothing and returns nil. A token the server no longer knows counts
// as revoked: the server answers 200 for it.
func (s *OAuth2Source) Revoke(ctx context.Context, sec *Secret) error {
	if s.RevocationURL == "" || sec == nil {
		return nil
	}
	token, _ := sec.Handle.(string)
	if token == "" {
		token = sec.Value
	}
	if token == "" {
		return errors.New("revoking oauth2 token: no token")
	}
	form := url.Values{"token": {token}, "token_type_hint": {"access_token"}}
	_, err := s.post(ctx, "revocation", s.RevocationURL, form)
	return err
}

// post sends form to an endpoint with client authentication and returns
// the body of a 2xx answer. what names the endpoint in errors.
func (s *OAuth2Source) post(ctx context.Context, what, endpoint string, form url.Values) ([]byte, error) {
	secret, err := s.clientSecret(ctx)
	if err != nil {
		return nil, err
	}
	if s.AuthStyle == AuthStylePost {
		form.Set("client_id", s.ClientID)
		if secret != "" {
			form.Set("client_secret", secret)
		}
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, endpoint, strings.NewReader(form.Encode()))
	if err != nil {
		return nil, fmt.Errorf("calling oauth2 %s endpoint: %w", what, err)
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	if s.AuthStyle != AuthStylePost {
		req.SetBasicAuth(url.QueryEscape(s.ClientID), url.QueryEscape(secret))
	}
	resp, err := s.client().Do(req)
	if err != nil {
		return nil, fmt.Errorf("calling oauth2 %s endpoint: %w", what, err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(io.LimitReader(resp.Body, maxOAuth2Response+1))
	switch {
	case err != nil:
		return nil, fmt.Errorf("reading oauth2 %s response: %w", what, err)
	case len(body) > maxOAuth2Response:
		return nil, fmt.Errorf("oauth2 %s response is larger than %d bytes", what, maxOAuth2Response)
	case resp.StatusCode < 200 || resp.StatusCode > 299:
		return nil, endpointError(what, resp, body, secret)
	}
	return body, nil
}

// clientSecret fetches the current client secret.
func (s *OAuth2Source) clientSecret(ctx context.Context) (string, error) {
	if s.ClientSecret == nil {
		return "", nil
	}
	sec, err := s.ClientSecret.Fetch(ctx)
	if err != nil {
		return "", fmt.Errorf("reading oauth2 client secret: %w", err)
	}
	return sec.Value, nil
}

func (s *OAuth2Source) client() *http.Client {
	if s.HTTPClient != nil {
		return s.HTTPClient
	}
	return &http.Client{
		Timeout: defaultOAuth2Timeout,
		// A redirect could carry the client secret to another host (307
		// and 308 resend the body); a token endpoint has no reason to
		// redirect.
		CheckRedirect: func(*http.Request, []*http.Request) error { return http.ErrUseLastResponse },
	}
}

func (s *OAuth2Source) now() time.Time {
	if s.Now != nil {
		return s.Now()
	}
	return time.Now()
}

// parseTokenResponse reads a token answer: JSON, or form-encoded from the
// servers that send that. Its errors name fields, never show values.
func parseTokenResponse(body []byte) (*tokenResponse, error) {
	tr := &tokenResponse{}
	if isFormEncoded(body) {
		v, err := url.ParseQuery(string(body))
		if err != nil {
			return nil, errors.New("token response is not valid form data")
		}
		tr.AccessToken, tr.Error = v.Get("access_token"), v.Get("error")
		if e := v.Get("expires_in"); e != "" {
			if err := tr.ExpiresIn.UnmarshalJSON([]byte(e)); err != nil {
				return nil, err
			}
		}
	} else if err := json.Unmarshal(body, tr); err != nil {
		var fieldErr *json.UnmarshalTypeError
		if errors.As(err, &fieldErr) {
			return nil, fmt.Errorf("token response field %q has the wrong type", fieldErr.Field)
		}
		if strings.Contains(err.Error(), "expires_in") {
			return nil, errors.New(`token response "expires_in" is not a number of seconds`)
		}
		return nil, errors.New("token response is not a JSON object")
	}
	if tr.AccessToken == "" && tr.Error != "" {
		return nil, fmt.Errorf("token response has no access_token but error %q", errorText(tr.Error, ""))
	}
	if tr.AccessToken == "" {
		return nil, errors.New("token response has no access_token")
	}
	return tr, nil
}

// isFormEncoded tells a form-encoded token answer from JSON by its first
// byte: JSON answers are objects.
func isFormEncoded(body []byte) bool {
	body = bytes.TrimSpace(body)
	return len(body) > 0 && body[0] != '{'
}

// endpointError describes a refused call by status and the OAuth2 error
// fields, never by the rest of the body. The fields are cut short and
// scrubbed of the client secret in case a server echoes it.
func endpointError(what string, resp *http.Response, body []byte, secret string) error {
	var er errorResponse
	if ct, _, _ := mime.ParseMediaType(resp.Header.Get("Content-Type")); ct == "application/json" || (len(body) > 0 && body[0] == '{') {
		_ = json.Unmarshal(body, &er)
	}
	msg := fmt.Sprintf("oauth2 %s endpoint answered %d %s", what, resp.StatusCode, http.StatusText(resp.StatusCode))
	if er.Error != "" {
		msg += ": " + strconv.Quote(errorText(er.Error, secret))
	}
	if er.Description != "" {
		msg += " (" + strconv.Quote(errorText(er.Description, secret)) + ")"
	}
	return errors.New(msg)
}

func errorText(s, secret string) string {
	if secret != "" {
		s = strings.ReplaceAll(s, secret, "[redacted]")
	}
	if len(s) > maxOAuth2ErrorText {
		s = strings.ToValidUTF8(s[:maxOAuth2ErrorText], "") + "..."
	}
	return s
}
