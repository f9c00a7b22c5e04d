//go:build !unix

package graceful

// loadInheritance finds nothing to inherit where restarts are not supported.
func loadInheritance() (*inheritance, error) { return nil, nil }
