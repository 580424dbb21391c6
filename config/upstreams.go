package config

import (
	"fmt"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
)

// The kinds of model server an upstream may be.
const (
	// UpstreamOllama is an Ollama server, spoken to on its native API.
	UpstreamOllama = "ollama"
	// UpstreamOpenAI is a server of the OpenAI-compatible API (OpenAI, vLLM, llama.cpp, LM Studio, ...).
	UpstreamOpenAI = "openai"
)

// Upstream is one model server of DS_UPSTREAMS, written NAME=KIND+URL.
type Upstream struct {
	// Name is the prefix of its models' names, such as "gpu" in "gpu/llama-3.2-3b".
	Name string
	// Kind is UpstreamOllama or UpstreamOpenAI.
	Kind string
	// URL is the server's base URL: the root for Ollama, with the API's path (such as /v1) for OpenAI.
	URL string
	// APIKey is read from DS_UPSTREAM_<NAME>_API_KEY, NAME upper-cased; empty sends none. It is a secret.
	APIKey string
}

// String writes the upstream back as NAME=KIND+URL, with any password of the URL masked and the API key
// only mentioned, so that the upstream can be logged.
func (u Upstream) String() string {
	s := u.Name + "=" + u.Kind + "+" + redactURL(u.URL)
	if u.APIKey != "" {
		s += " (api key [masked])"
	}
	return s
}

// APIKeyVar is the variable that holds the API key of the upstream named name.
func APIKeyVar(name string) string { return "DS_UPSTREAM_" + strings.ToUpper(name) + "_API_KEY" }

// Upstreams are the model servers of DS_UPSTREAMS, in order: the first also answers model names without an
// upstream prefix.
type Upstreams []Upstream

// upstreamName is what an upstream's name may be: it becomes part of an environment variable's name.
var upstreamName = regexp.MustCompile(`^[a-z][a-z0-9_]*$`)

// Decode implements envconfig.Decoder: a comma-separated list of NAME=KIND+URL, such as
// local=ollama+http://127.0.0.1:11434,gpu=openai+http://gpu-box:8000/v1.
func (us *Upstreams) Decode(value string) error {
	var out Upstreams
	if strings.TrimSpace(value) == "" {
		*us = out
		return nil
	}
	for entry := range strings.SplitSeq(value, ",") {
		entry = strings.TrimSpace(entry)
		name, rest, ok1 := strings.Cut(entry, "=")
		kind, raw, ok2 := strings.Cut(rest, "+")
		if !ok1 || !ok2 {
			return fmt.Errorf("%q is not NAME=KIND+URL such as gpu=openai+http://gpu-box:8000/v1", entry)
		}
		if !upstreamName.MatchString(name) {
			return fmt.Errorf("upstream name %q must be lower-case letters, digits and _, starting with a letter", name)
		}
		if slices.ContainsFunc(out, func(u Upstream) bool { return u.Name == name }) {
			return fmt.Errorf("upstream name %q is repeated", name)
		}
		if kind != UpstreamOllama && kind != UpstreamOpenAI {
			return fmt.Errorf("upstream %q: kind %q must be %s or %s", name, kind, UpstreamOllama, UpstreamOpenAI)
		}
		if !httpURL(raw) {
			return fmt.Errorf("upstream %q: %q must be an http(s) URL", name, redactURL(raw))
		}
		out = append(out, Upstream{Name: name, Kind: kind, URL: raw})
	}
	*us = out
	return nil
}

// String writes the upstreams back as DS_UPSTREAMS does, for the logs (see Upstream.String).
func (us Upstreams) String() string {
	parts := make([]string, len(us))
	for i, u := range us {
		parts[i] = u.String()
	}
	return strings.Join(parts, ",")
}

// readAPIKeys sets each upstream's APIKey from its variable, and refuses a DS_UPSTREAM_*_API_KEY that names
// no upstream, which would be a typo whose key is never sent.
func (us Upstreams) readAPIKeys() []error {
	var errs []error
	for i := range us {
		us[i].APIKey = os.Getenv(APIKeyVar(us[i].Name))
	}
	for _, kv := range os.Environ() {
		name, _, _ := strings.Cut(kv, "=")
		if !strings.HasPrefix(name, "DS_UPSTREAM_") || !strings.HasSuffix(name, "_API_KEY") {
			continue
		}
		if !slices.ContainsFunc(us, func(u Upstream) bool { return APIKeyVar(u.Name) == name }) {
			errs = append(errs, fmt.Errorf("%s: DS_UPSTREAMS has no upstream of that name", name))
		}
	}
	return errs
}

// Fallbacks maps a model to the model that answers in its place when it fails before its first token
// (DS_MODEL_FALLBACKS), both named as clients name them.
type Fallbacks map[string]string

// Decode implements envconfig.Decoder: a comma-separated list of MODEL=FALLBACK, such as
// local/llama3.2=gpu/llama-3.2-3b.
func (f *Fallbacks) Decode(value string) error {
	out := Fallbacks{}
	if strings.TrimSpace(value) == "" {
		*f = out
		return nil
	}
	for entry := range strings.SplitSeq(value, ",") {
		from, to, ok := strings.Cut(entry, "=")
		from, to = strings.TrimSpace(from), strings.TrimSpace(to)
		switch {
		case !ok || from == "" || to == "":
			return fmt.Errorf("%q is not MODEL=FALLBACK such as local/llama3.2=gpu/llama-3.2-3b", entry)
		case from == to:
			return fmt.Errorf("model %q cannot fall back to itself", from)
		case out[from] != "":
			return fmt.Errorf("model %q has two fallbacks", from)
		}
		out[from] = to
	}
	*f = out
	return nil
}

// String writes the fallbacks back as DS_MODEL_FALLBACKS does, sorted, for the logs.
func (f Fallbacks) String() string {
	parts := make([]string, 0, len(f))
	for from, to := range f {
		parts = append(parts, from+"="+to)
	}
	slices.Sort(parts)
	return strings.Join(parts, ",")
}

// httpURL reports whether raw is an http(s) URL with a host.
func httpURL(raw string) bool {
	u, err := url.Parse(raw)
	return err == nil && (u.Scheme == "http" || u.Scheme == "https") && u.Host != ""
}
