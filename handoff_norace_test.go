//go:build !race

package graceful

const raceOn = false
