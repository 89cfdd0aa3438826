// Command petrel is Petrel's single binary: the CLI (`petrel <noun> <verb>`)
// and the daemons (`petrel central`, `petrel subcloud`), the lab and the
// benchmark harness.
package main

import (
	"context"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/client"
)

// Exit codes (brief §8).
const (
	exitOK    = 0
	exitFail  = 1
	exitUsage = 2
	exitAuth  = 4
)

func main() {
	os.Exit(run(context.Background(), os.Args[1:], os.Stdin, os.Stdout, os.Stderr, os.Getenv))
}

// app holds one invocation's streams and global flags.
type app struct {
	stdin          io.Reader
	stdout, stderr io.Writer
	getenv         func(string) string

	url, token, caCert, site, output string
}

// run executes one command line and returns its exit code.
func run(ctx context.Context, args []string, stdin io.Reader, stdout, stderr io.Writer, getenv func(string) string) int {
	a := &app{stdin: stdin, stdout: stdout, stderr: stderr, getenv: getenv}
	root := a.rootCmd()
	root.SetArgs(args)
	root.SetIn(stdin)
	root.SetOut(stdout)
	root.SetErr(stderr)
	err := root.ExecuteContext(ctx)
	if err == nil {
		return exitOK
	}
	code := exitCode(err)
	fmt.Fprintln(stderr, "petrel:", err)
	if code == exitUsage {
		fmt.Fprintln(stderr, "Run 'petrel --help' for usage.")
	}
	return code
}

// usageError marks a command line that is wrong (exit 2).
type usageError struct{ error }

func usagef(format string, args ...any) error { return usageError{fmt.Errorf(format, args...)} }

func exitCode(err error) int {
	var ue usageError
	var ce *client.Error
	switch {
	case errors.As(err, &ue):
		return exitUsage
	case errors.As(err, &ce) && (ce.Status == http.StatusUnauthorized || ce.Status == http.StatusForbidden):
		return exitAuth
	}
	// cobra reports unknown commands and flags as plain errors.
	msg := err.Error()
	for _, p := range []string{"unknown command", "unknown flag", "unknown shorthand flag", "flag needs an argument",
		"invalid argument", "required flag", "accepts ", "requires "} {
		if strings.HasPrefix(msg, p) {
			return exitUsage
		}
	}
	return exitFail
}

func (a *app) rootCmd() *cobra.Command {
	root := &cobra.Command{
		Use:           "petrel",
		Short:         "Petrel: a distributed edge cloud",
		Long:          "petrel runs and operates a Petrel edge cloud: the daemons, the lab, and the CLI for its API.\nCommands are 'petrel <noun> <verb>'.",
		SilenceUsage:  true,
		SilenceErrors: true,
		PersistentPreRunE: func(cmd *cobra.Command, _ []string) error {
			switch a.output {
			case "table", "json", "yaml":
				return nil
			}
			return usagef("-o %q: want table, json or yaml", a.output)
		},
	}
	root.SetFlagErrorFunc(func(_ *cobra.Command, err error) error { return usageError{err} })
	pf := root.PersistentFlags()
	pf.StringVar(&a.url, "url", "", "API base URL (env PETREL_URL)")
	pf.StringVar(&a.token, "token", "", "API token (env PETREL_TOKEN; prefer the env or 'petrel login': argv is visible to other users)")
	pf.StringVar(&a.caCert, "ca-cert", "", "CA certificate to trust (env PETREL_CA_CERT)")
	pf.StringVar(&a.site, "site", "", "talk to this subcloud through central's relay (env PETREL_SITE)")
	pf.StringVarP(&a.output, "output", "o", "table", "output format: table, json or yaml")

	root.AddCommand(
		a.versionCmd(), a.loginCmd(), a.logoutCmd(), a.userCmd(), a.projectCmd(), a.tokenCmd(),
		a.hostCmd(), a.subcloudCmd(), a.subcloudGroupCmd(), a.imageCmd(), a.flavorCmd(), a.patchCmd(), a.strategyCmd(), a.serverCmd(), a.serverGroupCmd(), a.servicegroupCmd(), a.hypervisorCmd(), a.alarmCmd(), a.eventCmd(), a.webhookCmd(),
		a.centralDaemonCmd(), a.agentDaemonCmd(), a.vbmcCmd(), a.hostInitCmd(), a.libvirtdCmd(), a.etcdCmd(), a.demoServiceCmd(),
		a.labCmd(), a.benchCmd(), a.pkiCmd(),
	)
	return root
}

// group returns a noun command that only holds verbs.
func group(use, short string, verbs ...*cobra.Command) *cobra.Command {
	c := &cobra.Command{
		Use:   use,
		Short: short,
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return usagef("%s needs a verb: %s", use, verbNames(cmd))
		},
	}
	c.AddCommand(verbs...)
	return c
}

func verbNames(cmd *cobra.Command) string {
	var names []string
	for _, c := range cmd.Commands() {
		names = append(names, c.Name())
	}
	return strings.Join(names, ", ")
}

func noArgs(cmd *cobra.Command, args []string) error {
	if len(args) > 0 {
		return usagef("%s takes no arguments, got %q", cmd.CommandPath(), args)
	}
	return nil
}

func exactArgs(n int, names ...string) cobra.PositionalArgs {
	return func(cmd *cobra.Command, args []string) error {
		if len(args) != n {
			return usagef("%s needs %s", cmd.CommandPath(), strings.Join(names, " "))
		}
		return nil
	}
}
