// Command oidcissuer serves the OIDC issuer stand-in for demos: discovery, a
// JWKS, and GET /token?audience=... in the shape of GitHub Actions'
// ACTIONS_ID_TOKEN_REQUEST_URL (other query parameters become claims).
//
//	go run ./test/oidcissuer/cmd --listen 127.0.0.1:9000
//	export ACTIONS_ID_TOKEN_REQUEST_URL='http://127.0.0.1:9000/token?repository=acme/app&run_id=42'
//	export ACTIONS_ID_TOKEN_REQUEST_TOKEN=demo
package main

import (
	"context"
	"flag"
	"fmt"
	"os"
	"os/signal"
	"syscall"

	"github.com/kubectl-agent/kubectl-agent/test/oidcissuer"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:9000", "address to listen on")
	issuer := flag.String("issuer", "", "issuer URL to put in tokens (default http://<listen>)")
	reqToken := flag.String("request-token", "demo", "bearer token GET /token requires (empty: none)")
	flag.Parse()
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	i, err := oidcissuer.Listen(*listen, *issuer)
	if err != nil {
		fmt.Fprintln(os.Stderr, "error:", err)
		os.Exit(1)
	}
	i.RequestToken = *reqToken
	fmt.Printf("issuer %s\ntoken endpoint %s/token (bearer %q)\n", i.URL, i.URL, *reqToken)
	<-ctx.Done()
	_ = i.Close()
}
