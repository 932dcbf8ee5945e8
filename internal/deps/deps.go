//go:build deps

// Package deps pins modules that the project is about to use, so that
// parallel work does not race on go.mod. It never compiles into anything
// (build tag "deps"); remove an import once real code uses the module.
package deps

import (
	_ "github.com/aws/aws-sdk-go-v2/aws/signer/v4"
	_ "github.com/aws/aws-sdk-go-v2/config"
	_ "github.com/aws/aws-sdk-go-v2/service/sts"
	_ "github.com/coreos/go-oidc/v3/oidc"
	_ "github.com/go-jose/go-jose/v4"
	_ "github.com/gofrs/flock"
	_ "github.com/google/cel-go/cel"
	_ "github.com/gorilla/websocket"
	_ "github.com/jackc/pgx/v5/stdlib"
	_ "github.com/moby/spdystream"
	_ "github.com/prometheus/client_golang/prometheus/promhttp"
	_ "github.com/secure-systems-lab/go-securesystemslib/dsse"
	_ "github.com/transparency-dev/merkle/rfc6962"
	_ "golang.org/x/net/http2"
	_ "golang.org/x/oauth2"
	_ "k8s.io/client-go/kubernetes"
	_ "k8s.io/client-go/tools/remotecommand"
	_ "k8s.io/client-go/tools/portforward"
	_ "modernc.org/sqlite"
	_ "golang.org/x/mod/semver"
	_ "github.com/transparency-dev/formats/log"
	_ "golang.org/x/mod/sumdb/note"
)
