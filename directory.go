package graceful

import (
	"fmt"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
)

// startDir is the working directory the program started in, against which
// a relative os.Args[0] is resolved.
var startDir, _ = os.Getwd()

// release is what new processes are started from: an executable and the
// working directory to start it in ("" for this process's own).
type release struct {
	exe string
	dir string
}

// executable returns the path to start a new process of this program from:
// os.Args[0] as the program was started (so that a binary replaced at that
// path is picked up), falling back to the running executable.
func executable() (string, error) {
	path, err := argv0Path()
	if err != nil {
		return "", err
	}
	return path, checkExecutable(path)
}

// argv0Path resolves os.Args[0] against the directory the program started
// in, or PATH, without following symbolic links.
func argv0Path() (string, error) {
	arg0 := os.Args[0]
	switch {
	case strings.Contains(arg0, "/"):
		if filepath.IsAbs(arg0) {
			return filepath.Clean(arg0), nil
		}
		return filepath.Join(startDir, arg0), nil
	default:
		if p, err := exec.LookPath(arg0); err == nil {
			if !filepath.IsAbs(p) {
				p = filepath.Join(startDir, p)
			}
			return p, nil
		}
	}
	p, err := os.Executable()
	if err != nil {
		return "", fmt.Errorf("finding the executable: %w", err)
	}
	return p, nil
}

func checkExecutable(path string) error {
	fi, err := os.Stat(path)
	if err != nil {
		return fmt.Errorf("executable: %w", err)
	}
	if !fi.Mode().IsRegular() || fi.Mode().Perm()&0o111 == 0 {
		return fmt.Errorf("executable %s: not an executable file", path)
	}
	return nil
}

// exeInDirectory returns the path of this program's executable relative to
// dir, whether it was started through dir ("/srv/current/bin/app"), from
// inside it ("bin/app"), or found on PATH, and whether dir was named or
// already resolved.
func exeInDirectory(dir string) (string, error) {
	exe, err := argv0Path()
	if err != nil {
		return "", err
	}
	bases := []string{filepath.Clean(dir)}
	if real, err := filepath.EvalSymlinks(dir); err == nil {
		bases = append(bases, real)
	}
	candidates := []string{exe}
	if real, err := filepath.EvalSymlinks(exe); err == nil {
		candidates = append(candidates, real)
	}
	for _, c := range candidates {
		for _, b := range bases {
			if rel, err := filepath.Rel(b, c); err == nil && rel != ".." && !strings.HasPrefix(rel, "../") && rel != "." {
				return rel, nil
			}
		}
	}
	return "", fmt.Errorf("the executable %s is not inside Directory %s", exe, dir)
}

// resolveRelease finds what to start new processes from now. Without a
// Directory it is the executable at os.Args[0]. With one, the executable is
// found through Directory as it resolves at this moment; pin records the
// resolved release (for workers respawned later) instead of the Directory
// path (for a new master, which resolves it again itself).
func (s *Server) resolveRelease(rel string, pin bool) (release, error) {
	if s.Directory == "" {
		exe, err := executable()
		return release{exe: exe}, err
	}
	fi, err := os.Stat(s.Directory)
	if err != nil {
		return release{}, fmt.Errorf("release directory: %w", err)
	}
	if !fi.IsDir() {
		return release{}, fmt.Errorf("release directory %s is not a directory", s.Directory)
	}
	dir := s.Directory
	if pin {
		if dir, err = filepath.EvalSymlinks(s.Directory); err != nil {
			return release{}, fmt.Errorf("release directory: %w", err)
		}
	}
	r := release{exe: filepath.Join(dir, rel), dir: dir}
	if err := checkExecutable(r.exe); err != nil {
		where := s.Directory
		if real, rerr := filepath.EvalSymlinks(s.Directory); rerr == nil && real != s.Directory {
			where += " (now " + real + ")"
		}
		return release{}, fmt.Errorf("release directory %s: %w", where, err)
	}
	return r, nil
}
