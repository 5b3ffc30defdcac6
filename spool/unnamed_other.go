//go:build !linux

package spool

import (
	"errors"
	"os"
)

var errNoUnnamed = errors.New("unnamed files are Linux only")

// openUnnamed is not available here: writers create named files in tmp/.
func openUnnamed(string) (*os.File, error) { return nil, errNoUnnamed }

func linkUnnamed(*os.File, string) error { return errNoUnnamed }
