module github.com/gograceful/graceful/bench

go 1.26.8

require github.com/gograceful/graceful v0.0.0

require golang.org/x/sys v0.50.0 // indirect

replace github.com/gograceful/graceful => ../
