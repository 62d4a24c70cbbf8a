package main

import (
	"fmt"
	"os"

	"github.com/spf13/cobra"
	"github.com/spf13/cobra/doc"
)

// manCommand writes a man page per command (icebox.1, icebox-serve.1,
// icebox-config-check.1, ...) from the command tree, so they say what the
// binary does. `make man` writes the ones committed in docs/man.
func manCommand(a *cli) *cobra.Command {
	var dir string
	c := &cobra.Command{
		Use:   "man",
		Short: "write the man pages of every command",
		Long: `Writes a man page (section 1) for icebox and each of its commands into a
directory: icebox.1, icebox-serve.1, icebox-config-check.1, ... The date in
their header is SOURCE_DATE_EPOCH's if set, else today's.`,
		Example: "  icebox man --dir /usr/local/share/man/man1 && mandb",
		Args:    noArgs,
		RunE: func(c *cobra.Command, _ []string) error {
			if dir == "" {
				return usagef("man: --dir is required")
			}
			if err := os.MkdirAll(dir, 0o755); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			header := &doc.GenManHeader{Section: "1", Source: "icebox", Manual: "icebox manual"}
			if err := doc.GenManTree(c.Root(), header, dir); err != nil {
				return fmt.Errorf("man: %w", err)
			}
			_, err := fmt.Fprintf(a.stdout, "man pages written to %s\n", dir)
			return err
		},
	}
	c.Flags().StringVar(&dir, "dir", "", "directory to write the pages into (created if missing)")
	_ = c.MarkFlagDirname("dir")
	return c
}
