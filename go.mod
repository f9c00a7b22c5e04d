module github.com/gograceful/graceful

go 1.24

require (
	github.com/coreos/go-systemd/v22 v22.7.0
	github.com/gorilla/mux v1.8.1
	github.com/stretchr/testify v1.12.1
	go.yaml.in/yaml/v3 v3.0.5
	golang.org/x/sys v0.30.0
)
