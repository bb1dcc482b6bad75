// Package injector holds upstream credentials in memory and puts them into
// requests.
//
// A Source fetches a credential's value (a Secret); optional capabilities
// (Watcher, Renewer, Revoker) are discovered by type assertion. A Holder
// keeps one credential's current value: Run fetches it, refreshes it ahead
// of expiry with jitter, retries failures with backoff, and swaps each new
// value in as an immutable Version with one atomic store. Requests take a
// Version with Acquire, which is lock-free and allocation-free, and keep it
// until Release, so a swap never changes a request in flight; a superseded
// value is revoked once no request holds it. A Set is the holders of one
// configuration. A Form injects a Secret into a request without knowing the
// HTTP library.
//
// No secret value appears in an error, a log line or a Status: holders log
// versions, fingerprints and expiry times, and register every live value
// with a SecretSet so the log redactor can scrub it anyway.
package injector
