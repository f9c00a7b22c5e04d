module github.com/gograceful/graceful/bench

go 1.24

require github.com/gograceful/graceful v0.0.0

require github.com/coreos/go-systemd/v22 v22.7.0 // indirect

require (
	github.com/cloudflare/tableflip v1.2.3
	github.com/facebookgo/clock v0.0.0-20150410010913-600d898af40a // indirect
	github.com/facebookgo/grace v0.0.0-20180706040059-75cf19382434
	github.com/facebookgo/httpdown v0.0.0-20180706035922-5979d39b15c2 // indirect
	github.com/facebookgo/stats v0.0.0-20151006221625-1b76add642e4 // indirect
	golang.org/x/sys v0.30.0 // indirect
)

replace github.com/gograceful/graceful => ../
