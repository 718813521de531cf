// Written for meshwork-bench: grpc-gateway (the reference REST-to-gRPC
// transcoder) in front of the shop's catalog and users contracts, with the
// handlers protoc-gen-grpc-gateway generated from their google.api.http rules.
package main

import (
	"context"
	"flag"
	"log"
	"net/http"

	"github.com/grpc-ecosystem/grpc-gateway/runtime"
	"google.golang.org/grpc"

	"shopgw/catalog"
	"shopgw/users"
)

func main() {
	listen := flag.String("listen", "127.0.0.1:8081", "HTTP address to serve REST on")
	backend := flag.String("backend", "127.0.0.1:7102", "gRPC address of the services (h2c)")
	flag.Parse()
	ctx := context.Background()
	mux := runtime.NewServeMux()
	opts := []grpc.DialOption{grpc.WithInsecure()}
	if err := catalog.RegisterCatalogServiceHandlerFromEndpoint(ctx, mux, *backend, opts); err != nil {
		log.Fatal(err)
	}
	if err := users.RegisterUserServiceHandlerFromEndpoint(ctx, mux, *backend, opts); err != nil {
		log.Fatal(err)
	}
	log.Fatal(http.ListenAndServe(*listen, mux))
}
