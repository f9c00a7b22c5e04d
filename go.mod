module github.com/gograceful/graceful

go 1.26.8

require (
	github.com/gorilla/mux v1.8.1
	golang.org/x/sys v0.50.0
)

require github.com/coreos/go-systemd/v22 v22.7.0

require (
	github.com/stretchr/testify v1.12.1
	go.yaml.in/yaml/v3 v3.0.5 // indirect
)
