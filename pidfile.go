package graceful

import (
	"bytes"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
)

// writePIDFile makes path name pid, atomically.
func writePIDFile(path string, pid int) error {
	if err := writeAtomic(path, []byte(strconv.Itoa(pid)+"\n")); err != nil {
		return fmt.Errorf("pidfile: %w", err)
	}
	return nil
}

// writeAtomic replaces path with b, mode 0644: readers see the old content
// or the new, never a partial file.
func writeAtomic(path string, b []byte) error {
	f, err := os.CreateTemp(filepath.Dir(path), "."+filepath.Base(path)+".tmp*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), path)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// removePIDFile removes path if it still names pid.
func removePIDFile(path string, pid int) {
	b, err := os.ReadFile(path)
	if err == nil && string(bytes.TrimSpace(b)) == strconv.Itoa(pid) {
		os.Remove(path)
	}
}
