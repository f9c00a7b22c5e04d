//go:build unix && !linux

package graceful

// signalParent sends a signal to the parent without a pidfd, which only
// Linux has.
var signalParent = killParent
