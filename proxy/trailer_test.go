package proxy

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"strings"
	"testing"

	"github.com/sidekey/sidekey/config"
)

// Trailer fields pass both ways with the chunked bodies they end.
func TestTrailersRelayed(t *testing.T) {
	upTrailer := make(chan http.Header, 1)
	srv := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		_, _ = io.ReadAll(r.Body)
		upTrailer <- r.Trailer
		w.Header().Set("Trailer", "X-Trail")
		_, _ = io.WriteString(w, "body")
		w.(http.Flusher).Flush()
		w.Header().Set("X-Trail", "yes")
	}))
	t.Cleanup(srv.Close)
	u, _ := url.Parse(srv.URL)
	e := &env{}
	e.set("TOKEN", "tok")
	base := startProxy(t, e, testRoute("b", "/b/", u, &config.Inject{Credential: "cred", As: "bearer"}))
	get(t, mustRequest(t, "GET", base+"/b/warm", ""), 200).Body.Close()
	<-upTrailer
	req, _ := http.NewRequest("POST", base+"/b/x", io.MultiReader(strings.NewReader("up")))
	req.ContentLength = -1 // chunked
	req.Trailer = http.Header{"X-Up": {"ward"}}
	resp, err := http.DefaultTransport.RoundTrip(req)
	if err != nil {
		t.Fatal(err)
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if string(b) != "body" || resp.Trailer.Get("X-Trail") != "yes" {
		t.Errorf("the app got %q with trailer %v", b, resp.Trailer)
	}
	if got := <-upTrailer; got.Get("X-Up") != "ward" {
		t.Errorf("the upstream got trailer %v", got)
	}
}
