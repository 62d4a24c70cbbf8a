package main

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/spf13/cobra"
	"github.com/spf13/pflag"
)

// cli is what every command gets from the process.
type cli struct {
	sig            *signals
	stdout, stderr io.Writer
	env            []string
}

// commands are icebox's commands in the order help lists them. Adding a
// command is one line here: a func(*cli) *cobra.Command in its own file
// (the help, completion and man page tests walk this tree).
func (a *cli) commands() []*cobra.Command {
	return []*cobra.Command{
		serveCommand(a),
		credsCommand(a),
		checkCommand(a),
		configCommand(a),
		keyringCommand(a),
		sessionsCommand(a),
		matrixRTCCommand(a),
		healthCommand(a),
		versionCommand(a),
		manCommand(a),
		storeCommand(a),
	}
}

const rootLong = `icebox is a TURN/STUN relay with per-call credentials and call signaling.
With no command it serves: "icebox --config F" is "icebox serve --config F".

Without --config, /etc/icebox/icebox.yaml is read if it exists, else the
built-in defaults; ICEBOX_* variables override both. --url is the base URL of
a running icebox's HTTP API for every command that has it (default
$ICEBOX_URL, else http:// and ICEBOX_HTTP_LISTEN or 127.0.0.1:8080).

Exit codes: 0 ok (and help), 1 runtime failure (a socket, the state file, a
peer), 2 bad command line or configuration (nothing was started).`

// init keeps commands in the order of commands() rather than sorted: serve
// first, help and completion last. The setting is cobra's, process-wide,
// and set once here before anything runs.
func init() { cobra.EnableCommandSorting = false }

// newRootCmd builds the command tree. Errors are not printed here: main
// prints the error, and a usage error has printed the usage to stderr.
func newRootCmd(a *cli) *cobra.Command {
	root := &cobra.Command{
		Use:   "icebox [command]",
		Short: "TURN/STUN relay with per-call credentials and call signaling",
		Long:  rootLong,
		// Runnable only to refuse what is not a command: "icebox" alone
		// and "icebox --flag" are turned into serve by run.
		Args:              cobra.ArbitraryArgs,
		RunE:              func(c *cobra.Command, args []string) error { return unknownCommand(c, args) },
		SilenceErrors:     true,
		SilenceUsage:      true,
		DisableAutoGenTag: true, // the man pages carry no generation date
	}
	root.SetOut(a.stdout)
	root.SetErr(a.stderr)
	root.SetHelpFunc(func(c *cobra.Command, _ []string) { _, _ = io.WriteString(c.OutOrStdout(), helpText(c)) })
	root.SetUsageFunc(func(c *cobra.Command) error { _, err := io.WriteString(c.OutOrStderr(), usageText(c)); return err })
	root.SetFlagErrorFunc(func(c *cobra.Command, err error) error {
		_, _ = io.WriteString(a.stderr, usageText(c))
		return usagef("%s: %v", commandName(c), err)
	})
	root.AddCommand(a.commands()...)
	// No command takes file names as arguments (check takes URLs,
	// sessions IDs and users): no file names offered for them on TAB.
	var noFiles func(c *cobra.Command)
	noFiles = func(c *cobra.Command) {
		if c.ValidArgsFunction == nil {
			c.ValidArgsFunction = cobra.NoFileCompletions
		}
		for _, s := range c.Commands() {
			noFiles(s)
		}
	}
	noFiles(root)
	// cobra adds these when it executes; added now, help, the tests and
	// the man pages see the whole tree.
	root.InitDefaultCompletionCmd()
	root.InitDefaultHelpCmd()
	for _, c := range root.Commands() {
		switch c.Name() {
		case "help":
			// cobra's help, with its completion of command names, but an
			// unknown topic is a usage error rather than the root's help.
			c.Run, c.RunE = nil, helpCommand
		case "completion":
			// Help and usage errors as for icebox's own groups, and
			// descriptions in the style of the others.
			c.Args, c.RunE = cobra.ArbitraryArgs, groupRun
			c.Short = "print a shell completion script: bash, zsh, fish, powershell"
			for _, s := range c.Commands() {
				s.Short = "print the completion script for " + s.Name()
			}
		}
	}
	return root
}

// helpCommand is "icebox help [command...]".
func helpCommand(c *cobra.Command, args []string) error {
	target, rest, err := c.Root().Find(args)
	if err != nil || len(rest) > 0 {
		_, _ = io.WriteString(c.ErrOrStderr(), usageText(c.Root()))
		return usagef("help: unknown command %q", strings.Join(args, " "))
	}
	target.InitDefaultHelpFlag()
	return target.Help()
}

// group returns a command made of subcommands, such as "config". Help
// lists it with its subcommands.
func group(use, short, long string, subs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:         use + " COMMAND",
		Short:       short,
		Long:        long,
		Args:        cobra.ArbitraryArgs,
		RunE:        groupRun,
		Annotations: map[string]string{annotationGroup: "true"},
	}
	c.AddCommand(subs...)
	return c
}

// annotationGroup marks a group whose subcommands the top-level help lists.
const annotationGroup = "icebox.group"

// groupRun runs when a group is given no known subcommand: "help" is help,
// anything else a usage error.
func groupRun(c *cobra.Command, args []string) error {
	if len(args) > 0 && args[0] == "help" {
		return c.Help()
	}
	if len(args) == 0 {
		_, _ = io.WriteString(c.ErrOrStderr(), usageText(c))
		var names []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				names = append(names, s.Name())
			}
		}
		return usagef("%s: want a subcommand: %s", commandName(c), strings.Join(names, " | "))
	}
	return unknownCommand(c, args)
}

// unknownCommand is the usage error for args[0] not being a subcommand of c.
func unknownCommand(c *cobra.Command, args []string) error {
	_, _ = io.WriteString(c.ErrOrStderr(), usageText(c))
	what := "unknown subcommand"
	if !c.HasParent() {
		what = "unknown command"
	}
	err := fmt.Sprintf("%s %q", what, args[0])
	c.SuggestionsMinimumDistance = 2 // cobra's default for its own message
	if s := c.SuggestionsFor(args[0]); len(s) > 0 {
		err += fmt.Sprintf(" (did you mean %s?)", strings.Join(s, " or "))
	}
	if c.HasParent() {
		err = commandName(c) + ": " + err
	}
	return usageError{fmt.Errorf("%s", err)}
}

// noArgs refuses positional arguments, as a usage error.
func noArgs(c *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s: unexpected argument %q", commandName(c), args[0])
	}
	return nil
}

// maxOneArg allows one positional argument (an ID, a user).
func maxOneArg(c *cobra.Command, args []string) error {
	if len(args) > 1 {
		return usagef("%s: unexpected argument %q", commandName(c), args[1])
	}
	return nil
}

// commandName is the command's path without "icebox ", as errors name it.
func commandName(c *cobra.Command) string {
	if !c.HasParent() {
		return c.Name()
	}
	return strings.TrimPrefix(c.CommandPath(), c.Root().Name()+" ")
}

// configFlag declares -c/--config, the configuration file.
func configFlag(fs *pflag.FlagSet, p *string, help string) {
	if help == "" {
		help = "configuration file (default " + defaultConfigPath + " if it exists)"
	}
	fs.StringVarP(p, "config", "c", "", help)
}

// apiFlags declares --url and --token of the commands that talk to a
// running icebox's admin API.
func apiFlags(fs *pflag.FlagSet, url, token *string) {
	fs.StringVar(url, "url", "", urlFlagHelp)
	fs.StringVar(token, "token", "", "admin bearer token (default: $ICEBOX_ADMIN_TOKEN)")
}

// helpText is a command's help: the usage lines, what it does, its
// subcommands, examples and flags.
func helpText(c *cobra.Command) string { return formatHelp(c, true) }

// usageText is what a usage error prints: the help without the
// description and the examples.
func usageText(c *cobra.Command) string { return formatHelp(c, false) }

func formatHelp(c *cobra.Command, full bool) string {
	var b strings.Builder
	fmt.Fprintf(&b, "usage: %s\n", strings.Join(useLines(c), "\n       "))
	if d := strings.TrimSpace(c.Long); full && d != "" {
		fmt.Fprintf(&b, "\n%s\n", d)
	} else if full && c.Short != "" {
		fmt.Fprintf(&b, "\n%s.\n", strings.ToUpper(c.Short[:1])+c.Short[1:])
	}
	if rows := commandRows(c); len(rows) > 0 {
		width := 0
		for _, r := range rows {
			width = max(width, len(r[0]))
		}
		b.WriteString("\ncommands:\n")
		for _, r := range rows {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, r[0], r[1])
		}
	}
	if ex := strings.TrimRight(c.Example, "\n "); full && ex != "" {
		fmt.Fprintf(&b, "\nexamples:\n%s\n", ex)
	}
	if c.HasAvailableLocalFlags() {
		fmt.Fprintf(&b, "\nflags:\n%s", c.LocalFlags().FlagUsages())
	}
	switch {
	case !c.HasParent():
		fmt.Fprintf(&b, "\nRun \"%[1]s <command> --help\" or \"%[1]s help <command>\" for a command's flags.\n", c.Name())
	case c.HasAvailableSubCommands():
		fmt.Fprintf(&b, "\nRun \"%s <command> --help\" for a command's flags.\n", c.CommandPath())
	}
	return b.String()
}

// useLines are the usage lines of c: its own, or for a group those of its
// subcommands.
func useLines(c *cobra.Command) []string {
	switch {
	case !c.HasParent():
		return []string{c.Name() + " [serve flags]", c.Name() + " <command> [flags]"}
	case c.HasAvailableSubCommands():
		var lines []string
		for _, s := range c.Commands() {
			if s.IsAvailableCommand() {
				lines = append(lines, s.UseLine())
			}
		}
		return lines
	}
	return []string{c.UseLine()}
}

// commandRows are the commands help lists under c: its subcommands, and
// under the root a group's subcommands ("config check").
func commandRows(c *cobra.Command) [][2]string {
	var rows [][2]string
	for _, s := range c.Commands() {
		if !s.IsAvailableCommand() {
			continue
		}
		if !c.HasParent() && s.Annotations[annotationGroup] != "" {
			for _, ss := range s.Commands() {
				if ss.IsAvailableCommand() {
					rows = append(rows, [2]string{s.Name() + " " + ss.Name(), ss.Short})
				}
			}
			continue
		}
		rows = append(rows, [2]string{s.Name(), s.Short})
	}
	return rows
}

// isHelpFlag reports whether arg asks for help as a flag.
func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "--help" || arg == "-help"
}

// normaliseFlags rewrites single-dash long flags ("-config F", "-help"),
// which the standard flag package that icebox used before accepted and
// pflag does not (it reads -config as -c -o -n ...), into double-dash ones,
// for the flags of the command args run. A flag's value is left alone
// ("--password -secret"), as is everything after "--".
func normaliseFlags(root *cobra.Command, args []string) []string {
	c, _, err := root.Find(args)
	if err != nil {
		return args
	}
	c.InitDefaultHelpFlag()
	fs := c.Flags()
	out := slices.Clone(args)
	for i := 0; i < len(out); i++ {
		arg := out[i]
		if arg == "--" {
			break
		}
		if !strings.HasPrefix(arg, "-") || len(arg) < 2 {
			continue
		}
		name, _, hasValue := strings.Cut(strings.TrimLeft(arg, "-"), "=")
		f := fs.Lookup(name)
		if len(name) == 1 && !strings.HasPrefix(arg, "--") {
			f = fs.ShorthandLookup(name)
		}
		if f == nil {
			continue
		}
		if !strings.HasPrefix(arg, "--") && len(name) > 1 {
			out[i] = "-" + arg
		}
		if !hasValue && f.NoOptDefVal == "" {
			i++ // the flag's value
		}
	}
	return out
}
