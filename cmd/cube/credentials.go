package main

import (
	"bufio"
	"crypto/tls"
	"os"
	"path/filepath"
	"strconv"
	"strings"

	"github.com/cube-orch/cube/security"
	"github.com/spf13/pflag"
)

// This file gives the client commands their credentials, as Nomad's CLI
// takes them: a token (--token, CUBE_TOKEN) and TLS files (--ca-cert,
// --client-cert, --client-key; CUBE_CACERT, CUBE_CLIENT_CERT,
// CUBE_CLIENT_KEY). When none of the CUBE_* variables is set, they are read
// from ./.cluster/env, the file `make cluster` writes, so that on the
// machine that ran it `cube status` works with no flag and no `source`.

// clusterEnvFile is the file `make cluster` writes (DESIGN §6), relative to
// the directory the CLI runs in; CUBE_ENV_FILE names another.
const clusterEnvFile = ".cluster/env"

// clientEnv are the variables the client commands read.
var clientEnv = []string{"CUBE_MANAGERS", "CUBE_TOKEN", "CUBE_CACERT", "CUBE_CLIENT_CERT", "CUBE_CLIENT_KEY"}

// credentials are the client's token and TLS files.
type credentials struct {
	token             string
	caCert, cert, key string
}

// register adds the credential flags, their defaults taken from env.
func (c *credentials) register(pf *pflag.FlagSet, env func(string) string) {
	pf.StringVar(&c.token, "token", env("CUBE_TOKEN"), "token sent with every request (env CUBE_TOKEN); make one with cube token create")
	pf.StringVar(&c.caCert, "ca-cert", env("CUBE_CACERT"), "CA certificate the managers' certificates are checked against; turns on https (env CUBE_CACERT)")
	pf.StringVar(&c.cert, "client-cert", env("CUBE_CLIENT_CERT"), "client certificate to present, instead of or with a token (env CUBE_CLIENT_CERT)")
	pf.StringVar(&c.key, "client-key", env("CUBE_CLIENT_KEY"), "key of --client-cert (env CUBE_CLIENT_KEY)")
}

// tls returns the client's TLS config; nil when no CA certificate is named
// (plain HTTP, as to cube dev).
func (c *credentials) tls() (*tls.Config, error) {
	if c.caCert == "" && c.cert == "" && c.key == "" {
		return nil, nil
	}
	return security.ClientTLS(c.caCert, c.cert, c.key)
}

// clusterEnv returns a lookup of the client variables: the environment when
// any of them is set there, else the export lines of the cluster env file
// (CUBE_ENV_FILE, default ./.cluster/env), whose relative paths are taken
// from the file's own directory's parent (where make cluster ran).
func clusterEnv(lookup func(string) (string, bool)) func(string) string {
	for _, k := range clientEnv {
		if v, ok := lookup(k); ok && v != "" {
			return func(k string) string { v, _ := lookup(k); return v }
		}
	}
	path := clusterEnvFile
	if v, ok := lookup("CUBE_ENV_FILE"); ok && v != "" {
		path = v
	}
	vars := readEnvFile(path)
	return func(k string) string { return vars[k] }
}

// readEnvFile parses the `export K=V` (or `K=V`) lines of a shell file; a
// missing or unreadable file yields nothing. Values may be single- or
// double-quoted.
func readEnvFile(path string) map[string]string {
	f, err := os.Open(path)
	if err != nil {
		return nil
	}
	defer f.Close()
	base := filepath.Dir(filepath.Dir(path))
	vars := map[string]string{}
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		line := strings.TrimSpace(sc.Text())
		line = strings.TrimPrefix(line, "export ")
		k, v, ok := strings.Cut(line, "=")
		if !ok || strings.HasPrefix(k, "#") {
			continue
		}
		if uq, err := strconv.Unquote(v); err == nil {
			v = uq
		} else if len(v) >= 2 && v[0] == '\'' && v[len(v)-1] == '\'' {
			v = v[1 : len(v)-1]
		}
		if strings.HasSuffix(k, "CERT") || strings.HasSuffix(k, "KEY") {
			if v != "" && !filepath.IsAbs(v) {
				v = filepath.Join(base, v)
			}
		}
		vars[strings.TrimSpace(k)] = v
	}
	return vars
}
