package main

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"time"

	"github.com/spf13/cobra"
	"sigs.k8s.io/yaml"

	"github.com/petrel-edge/petrel/central"
	"github.com/petrel-edge/petrel/internal/atomicfile"
	"github.com/petrel-edge/petrel/internal/pki"
)

// pkiCmd holds local key tools the deploy playbooks run on a machine.
func (a *app) pkiCmd() *cobra.Command {
	var cn, keyOut, csrOut string
	csr := &cobra.Command{
		Use:   "csr --common-name NAME --key-out FILE --csr-out FILE",
		Short: "Make a private key (0600) and a certificate request for it, on this machine",
		Long: "Make a P-256 private key and a PEM certificate request naming it. deploy/ansible's central-join role\n" +
			"runs it on a new site so that the site's key never leaves the machine; central signs the request.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if cn == "" || keyOut == "" || csrOut == "" {
				return usagef("--common-name, --key-out and --csr-out are required")
			}
			keyPEM, csrPEM, err := pki.NewCSR(cn)
			if err != nil {
				return err
			}
			for _, f := range []string{keyOut, csrOut} {
				if err := os.MkdirAll(filepath.Dir(f), 0o700); err != nil {
					return err
				}
			}
			if err := atomicfile.Write(keyOut, keyPEM, 0o600); err != nil {
				return err
			}
			return atomicfile.Write(csrOut, csrPEM, 0o644)
		},
	}
	csr.Flags().StringVar(&cn, "common-name", "", "the name the request asks for")
	csr.Flags().StringVar(&keyOut, "key-out", "", "write the private key here (0600)")
	csr.Flags().StringVar(&csrOut, "csr-out", "", "write the certificate request here")
	return group("pki", "Local key tools (certificate requests)", csr)
}

// readDeployOptions reads a YAML file of deploy options (central's
// DeployOptions: ssh_user, ssh_port, ssh_key_file, ssh_known_hosts_file,
// values), as `petrel lab add-machine` writes it.
func readDeployOptions(path string) (central.DeployOptions, error) {
	var o central.DeployOptions
	b, err := os.ReadFile(path)
	if err != nil {
		return o, fmt.Errorf("deploy options: %w", err)
	}
	if err := yaml.UnmarshalStrict(b, &o); err != nil {
		return o, fmt.Errorf("deploy options %s: %w", path, err)
	}
	return o, nil
}

// subcloudDeployCmds are `subcloud deploy [show|abort|resume] NAME`,
// `subcloud errors NAME` and `subcloud join-token NAME`.
func (a *app) subcloudDeployCmds() []*cobra.Command {
	var optsFile, keyFile, user, known string
	var port int
	var wait time.Duration
	flags := func(c *cobra.Command) {
		c.Flags().StringVar(&optsFile, "options", "", "a YAML file of deploy options (ssh_user, ssh_port, ssh_key_file, ssh_known_hosts_file, values)")
		c.Flags().StringVar(&keyFile, "ssh-key-file", "", "the private key Ansible logs in with (on central's machine)")
		c.Flags().StringVar(&user, "ssh-user", "", "the user Ansible logs in as (default root)")
		c.Flags().IntVar(&port, "ssh-port", 0, "the machine's SSH port (default 22)")
		c.Flags().StringVar(&known, "known-hosts", "", "a known_hosts file pinning the machine's host key")
		c.Flags().DurationVar(&wait, "wait", 0, "wait up to this long for the deploy to stop; exit 1 unless it completed")
	}
	options := func(cmd *cobra.Command) (*central.DeployOptions, error) {
		var o central.DeployOptions
		given := false
		if optsFile != "" {
			var err error
			if o, err = readDeployOptions(optsFile); err != nil {
				return nil, err
			}
			given = true
		}
		for flag, set := range map[string]func(){"ssh-key-file": func() { o.SSHKeyFile = keyFile }, "ssh-user": func() { o.SSHUser = user },
			"ssh-port": func() { o.SSHPort = port }, "known-hosts": func() { o.SSHKnownHostsFile = known }} {
			if cmd.Flags().Changed(flag) {
				set()
				given = true
			}
		}
		if !given {
			return nil, nil
		}
		return &o, nil
	}
	deployPath := func(name string) string { return "/v1/subclouds/" + url.PathEscape(name) + "/deploy" }
	finish := func(cmd *cobra.Command, name string, raw []byte) error {
		if wait == 0 {
			return a.printRaw(raw)
		}
		c, err := a.client()
		if err != nil {
			return err
		}
		deadline := time.Now().Add(wait)
		for {
			var d central.Deploy
			if err := c.Do(cmd.Context(), http.MethodGet, deployPath(name), nil, nil, &raw); err != nil {
				return err
			}
			if err := json.Unmarshal(raw, &d); err != nil {
				return err
			}
			if d.State != central.DeployRunning {
				if err := a.printRaw(raw); err != nil {
					return err
				}
				if d.State != central.DeployFinished {
					return fmt.Errorf("the deploy of %s is %s ('petrel subcloud errors %s' says why)", name, d.State, name)
				}
				return nil
			}
			if time.Now().After(deadline) {
				return fmt.Errorf("the deploy of %s is still running (phase %s) after %s", name, d.Phase, wait)
			}
			select {
			case <-cmd.Context().Done():
				return cmd.Context().Err()
			case <-time.After(time.Second):
			}
		}
	}
	post := func(cmd *cobra.Command, name, path string, body any) error {
		c, err := a.client()
		if err != nil {
			return err
		}
		var raw []byte
		if err := c.Do(cmd.Context(), http.MethodPost, path, nil, body, &raw); err != nil {
			return err
		}
		return finish(cmd, name, raw)
	}

	deployCmd := &cobra.Command{
		Use:   "deploy NAME --ssh-key-file F [--ssh-user U] [--ssh-port P] [--known-hosts F] [--options FILE] [--wait D] | deploy show|abort|resume NAME",
		Short: "Deploy a registered subcloud from central with Ansible: create, bootstrap, config, complete",
		Long: "Central runs deploy/ansible's bootstrap.yml against the subcloud's bootstrap address (key-based SSH),\n" +
			"with the values it derives from the registration (and --options' values over them) in a vars file and a\n" +
			"one-time join token in a 0600 secrets file. Progress is kept at central: a deploy interrupted by a central\n" +
			"restart resumes; a failed one stops in bootstrap-failed or config-failed ('subcloud errors NAME' says why)\n" +
			"and 'subcloud deploy resume NAME' runs the failed phase again. docs/deploy.md.",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := options(cmd)
			if err != nil {
				return err
			}
			if o == nil || o.SSHKeyFile == "" {
				return usagef("--ssh-key-file (or --options with ssh_key_file) is required")
			}
			return post(cmd, args[0], deployPath(args[0]), o)
		},
	}
	flags(deployCmd)
	showCmd := &cobra.Command{Use: "show NAME", Short: "Show a subcloud's deploy: phase, state, runs, failure", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, deployPath(args[0]), nil)
		}}
	abortCmd := &cobra.Command{Use: "abort NAME", Short: "Stop a running deploy (its deploy status becomes *-failed)", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodPost, deployPath(args[0])+"/abort", nil)
		}}
	resumeCmd := &cobra.Command{Use: "resume NAME [--options FILE] [--ssh-key-file F …] [--wait D]",
		Short: "Run a failed or aborted deploy again from the phase it stopped in (new options replace the old)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			o, err := options(cmd)
			if err != nil {
				return err
			}
			return post(cmd, args[0], deployPath(args[0])+"/resume", central.ResumeDeployRequest{Options: o})
		}}
	flags(resumeCmd)
	deployCmd.AddCommand(showCmd, abortCmd, resumeCmd)

	errorsCmd := &cobra.Command{Use: "errors NAME", Short: "Why a subcloud's deploy stopped: the failing task, its message and a hint",
		Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/subclouds/"+url.PathEscape(args[0])+"/errors", nil)
		}}
	var ttl time.Duration
	tokenCmd := &cobra.Command{Use: "join-token NAME [--ttl 1h]",
		Short: "A one-time token with which the subcloud's site joins central (shown once; for deploy/ansible's secrets file)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			body := central.JoinTokenRequest{TTLSeconds: int64(ttl / time.Second)}
			return a.createSecret(cmd, "/v1/subclouds/"+url.PathEscape(args[0])+"/join-tokens", body, func(raw []byte) (string, string, error) {
				var it central.IssuedJoinToken
				if err := json.Unmarshal(raw, &it); err != nil {
					return "", "", err
				}
				return it.Token, fmt.Sprintf("Join token for subcloud %s, single use, expires at %s. Put it in the site's secrets file (petrel_secrets.join_token, 0600).",
					it.Subcloud, it.ExpiresAt.Format(time.RFC3339)), nil
			})
		}}
	tokenCmd.Flags().DurationVar(&ttl, "ttl", time.Hour, "lifetime (at most 168h)")
	return []*cobra.Command{deployCmd, errorsCmd, tokenCmd}
}
