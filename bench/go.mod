module github.com/gograceful/graceful/bench

go 1.26.0

require github.com/gograceful/graceful v0.0.0

require (
	github.com/coreos/go-systemd/v22 v22.7.0 // indirect
	golang.org/x/net v0.60.0 // indirect
	golang.org/x/text v0.42.0 // indirect
	google.golang.org/genproto/googleapis/rpc v0.0.0-20260817212433-ac3dfec99bb1 // indirect
)

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/facebookgo/clock v0.0.0-20150410010913-600d898af40a // indirect
	github.com/facebookgo/grace v0.0.0-20180706040059-75cf19382434
	github.com/facebookgo/httpdown v0.0.0-20180706035922-5979d39b15c2 // indirect
	github.com/facebookgo/stats v0.0.0-20151006221625-1b76add642e4 // indirect
	github.com/gograceful/graceful/contrib/grpc v0.0.0
	golang.org/x/sys v0.48.0 // indirect
	google.golang.org/grpc v1.85.0
	google.golang.org/protobuf v1.36.12
)

replace github.com/gograceful/graceful => ../

replace github.com/gograceful/graceful/contrib/grpc => ../contrib/grpc
