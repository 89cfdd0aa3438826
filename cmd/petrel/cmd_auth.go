package main

import (
	"bufio"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"
	"time"

	"github.com/spf13/cobra"
	"golang.org/x/term"

	"github.com/petrel-edge/petrel/auth"
	"github.com/petrel-edge/petrel/internal/version"
)

func (a *app) versionCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "version",
		Short: "Print the CLI's version, and the server's when one is configured",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			v := version.Get()
			out := map[string]any{"client": v}
			var serverErr error
			if u, _, _ := a.endpoint(); u != "" {
				var raw json.RawMessage
				c, err := a.client()
				if err == nil {
					err = c.Do(cmd.Context(), http.MethodGet, "/v1/version", nil, nil, (*[]byte)(&raw))
				}
				if err != nil {
					serverErr = fmt.Errorf("server version: %w", err)
				} else {
					out["server"] = raw
				}
			}
			if a.output != "table" {
				b, _ := json.Marshal(out)
				if err := a.printRaw(b); err != nil {
					return err
				}
				return serverErr
			}
			fmt.Fprintf(a.stdout, "client: petrel %s (commit %s, %s)\n", v.Version, orDash(v.Commit), v.Go)
			if raw, ok := out["server"].(json.RawMessage); ok {
				var s struct{ Version, Commit, Daemon, Site string }
				_ = json.Unmarshal(raw, &s)
				fmt.Fprintf(a.stdout, "server: petrel %s %s (commit %s)%s\n", s.Daemon, s.Version, orDash(s.Commit), siteSuffix(s.Site))
			}
			return serverErr
		},
	}
}

func siteSuffix(s string) string {
	if s == "" {
		return ""
	}
	return " at site " + s
}

func orDash(s string) string {
	if s == "" {
		return "-"
	}
	return s
}

// readPassword takes a password from a 0600 file, from a terminal prompt, or
// from the first line of standard input; never from argv.
func (a *app) readPassword(file, prompt string) (string, error) {
	if file != "" {
		return auth.ReadSecretFile(file)
	}
	if f, ok := a.stdin.(*os.File); ok && term.IsTerminal(int(f.Fd())) {
		fmt.Fprint(a.stderr, prompt)
		b, err := term.ReadPassword(int(f.Fd()))
		fmt.Fprintln(a.stderr)
		return string(b), err
	}
	line, err := bufio.NewReader(a.stdin).ReadString('\n')
	if err != nil && line == "" {
		return "", usagef("no password: pass --password-file FILE (mode 0600) or type it on standard input")
	}
	return strings.TrimRight(line, "\r\n"), nil
}

func (a *app) loginCmd() *cobra.Command {
	var user, pwFile string
	var printToken bool
	var ttl time.Duration
	c := &cobra.Command{
		Use:   "login",
		Short: "Exchange a password for a token and save it for later commands",
		Long: "login asks the API at --url for a token. The password comes from --password-file (mode 0600),\n" +
			"a prompt, or standard input. The token is saved (mode 0600) in ~/.config/petrel/credentials.json\n" +
			"unless --print-token prints it instead.",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			pw, err := a.readPassword(pwFile, "Password for "+user+": ")
			if err != nil {
				return err
			}
			u, _, ca := a.endpoint()
			c, err := a.client()
			if err != nil {
				return err
			}
			var issued auth.IssuedToken
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/login", nil, auth.LoginRequest{Username: user, Password: pw}, &issued); err != nil {
				return err
			}
			if ttl > 0 { // trade the login token for one of the asked lifetime, then drop it
				a.token = issued.Token
				c, _ = a.client()
				var longer auth.IssuedToken
				if err := c.Do(cmd.Context(), http.MethodPost, "/v1/tokens", nil,
					auth.CreateTokenRequest{Description: "petrel login --ttl", TTLSeconds: int64(ttl / time.Second)}, &longer); err != nil {
					return err
				}
				_ = c.Do(cmd.Context(), http.MethodDelete, "/v1/tokens/"+issued.Detail.ID, nil, nil, nil)
				issued = longer
			}
			if printToken {
				fmt.Fprintln(a.stdout, issued.Token)
				return nil
			}
			if err := a.saveCredentials(credentials{URL: u, Token: issued.Token, CACert: ca, User: user, ExpiresAt: issued.Detail.ExpiresAt}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Logged in to %s as %s (%s); the token expires at %s.\n", u, user, issued.Detail.Role,
				issued.Detail.ExpiresAt.Format(time.RFC3339))
			return nil
		},
	}
	c.Flags().StringVarP(&user, "username", "u", auth.BootstrapAdmin, "user name")
	c.Flags().StringVar(&pwFile, "password-file", "", "file holding the password (mode 0600)")
	c.Flags().BoolVar(&printToken, "print-token", false, "print the token instead of saving it")
	c.Flags().DurationVar(&ttl, "ttl", 0, "token lifetime (default: the server's login TTL, 12h)")
	return c
}

func (a *app) logoutCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "logout",
		Short: "Revoke the saved token and forget it",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			cr, err := a.loadCredentials()
			if err != nil || cr.Token == "" {
				return fmt.Errorf("not logged in")
			}
			a.url, a.token, a.caCert = cr.URL, cr.Token, cr.CACert
			if c, err := a.client(); err == nil {
				var who auth.WhoAmI
				if c.Do(cmd.Context(), http.MethodGet, "/v1/whoami", nil, nil, &who) == nil {
					_ = c.Do(cmd.Context(), http.MethodDelete, "/v1/tokens/"+who.TokenID, nil, nil, nil)
				}
			}
			if err := os.Remove(a.credentialsPath()); err != nil {
				return err
			}
			fmt.Fprintln(a.stdout, "Logged out.")
			return nil
		},
	}
}

func (a *app) userCmd() *cobra.Command {
	var role, project, pwFile, filterRole, filterProject string
	var limit int
	create := &cobra.Command{
		Use:   "create NAME --role admin|operator|reader [--project P] [--password-file FILE]",
		Short: "Create a user (admin)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if role == "" {
				return usagef("--role is required: admin, operator or reader")
			}
			pw, err := a.readPassword(pwFile, "Password for "+args[0]+": ")
			if err != nil {
				return err
			}
			return a.call(cmd, http.MethodPost, "/v1/users", auth.CreateUserRequest{Name: args[0], Role: auth.Role(role), Project: project, Password: pw})
		},
	}
	create.Flags().StringVar(&role, "role", "", "admin, operator or reader")
	create.Flags().StringVar(&project, "project", "", "the user's project (default admin)")
	create.Flags().StringVar(&pwFile, "password-file", "", "file holding the password (mode 0600); else a prompt or stdin")
	list := &cobra.Command{
		Use:   "list",
		Short: "List users (admin)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if filterRole != "" {
				q.Set("role", filterRole)
			}
			if filterProject != "" {
				q.Set("project", filterProject)
			}
			return a.list(cmd, "/v1/users", q, limit, "name", "role", "project", "created_at")
		},
	}
	list.Flags().StringVar(&filterRole, "role", "", "only users with this role")
	list.Flags().StringVar(&filterProject, "project", "", "only users of this project")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use:   "show NAME",
		Short: "Show a user",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/users/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use:   "delete NAME",
		Short: "Delete a user and revoke its tokens (admin)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/users/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted user %s.\n", args[0])
			return nil
		},
	}
	var setPwFile string
	setPw := &cobra.Command{
		Use:   "set-password NAME [--password-file FILE]",
		Short: "Set a user's password (admin, or the user itself)",
		Args:  exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			pw, err := a.readPassword(setPwFile, "New password for "+args[0]+": ")
			if err != nil {
				return err
			}
			if err := a.call(cmd, http.MethodPut, "/v1/users/"+url.PathEscape(args[0])+"/password", auth.PasswordRequest{Password: pw}); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Password of %s changed.\n", args[0])
			return nil
		},
	}
	setPw.Flags().StringVar(&setPwFile, "password-file", "", "file holding the password (mode 0600)")
	return group("user", "Manage users", create, list, show, del, setPw)
}

func (a *app) projectCmd() *cobra.Command {
	var name, desc string
	var limit int
	create := &cobra.Command{
		Use:   "create NAME [--description D]",
		Short: "Create a project (a tenant; admin)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nameArg(cmd, args, name)
			if err != nil {
				return err
			}
			return a.call(cmd, http.MethodPost, "/v1/projects", auth.CreateProjectRequest{Name: n, Description: desc})
		},
	}
	create.Flags().StringVar(&name, "name", "", "the project's name (alias of NAME)")
	create.Flags().StringVar(&desc, "description", "", "what the project is for")
	list := &cobra.Command{
		Use: "list", Short: "List projects (admin)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/projects", nil, limit, "name", "description", "created_at")
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use: "show NAME", Short: "Show a project (admin, or a member)", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/projects/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME", Short: "Delete a project without users (admin)", Args: exactArgs(1, "NAME"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/projects/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted project %s.\n", args[0])
			return nil
		},
	}
	return group("project", "Manage projects (tenants)", create, list, show, del)
}

func (a *app) tokenCmd() *cobra.Command {
	var desc, role, user, filterUser string
	var ttl time.Duration
	var limit int
	create := &cobra.Command{
		Use:   "create [--description D] [--ttl 24h] [--role R] [--user U]",
		Short: "Create an API token (shown once)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			req := auth.CreateTokenRequest{User: user, Role: auth.Role(role), Description: desc, TTLSeconds: int64(ttl / time.Second)}
			return a.createSecret(cmd, "/v1/tokens", req, func(raw []byte) (string, string, error) {
				var it auth.IssuedToken
				if err := json.Unmarshal(raw, &it); err != nil {
					return "", "", err
				}
				return it.Token, fmt.Sprintf("Token %s for %s (%s) expires at %s. It is shown only now: keep it in a 0600 file or PETREL_TOKEN.",
					it.Detail.ID, it.Detail.User, it.Detail.Role, it.Detail.ExpiresAt.Format(time.RFC3339)), nil
			})
		},
	}
	create.Flags().StringVar(&desc, "description", "", "what the token is for")
	create.Flags().DurationVar(&ttl, "ttl", 0, "lifetime (default 12h, at most 8760h)")
	create.Flags().StringVar(&role, "role", "", "scope the token to a smaller role")
	create.Flags().StringVar(&user, "user", "", "create it for another user (admin)")
	list := &cobra.Command{
		Use:   "list [--user U]",
		Short: "List tokens (yours; an admin sees all or --user's)",
		Args:  noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			q := url.Values{}
			if filterUser != "" {
				q.Set("user", filterUser)
			}
			return a.list(cmd, "/v1/tokens", q, limit, "id", "user", "role", "project", "description", "expires_at", "revoked_at")
		},
	}
	list.Flags().StringVar(&filterUser, "user", "", "only this user's tokens")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use:   "show ID",
		Short: "Show a token",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/tokens/"+url.PathEscape(args[0]), nil)
		},
	}
	revoke := &cobra.Command{
		Use:   "revoke ID",
		Short: "Revoke a token",
		Args:  exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/tokens/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Revoked token %s.\n", args[0])
			return nil
		},
	}
	return group("token", "Manage API tokens", create, list, show, revoke)
}

// call performs one API call and prints the resource it answers, if any.
func (a *app) call(cmd *cobra.Command, method, path string, body any) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.Do(cmd.Context(), method, path, nil, body, &raw); err != nil {
		return err
	}
	if len(raw) == 0 {
		return nil
	}
	return a.printRaw(raw)
}

// list fetches a list (all pages up to limit) and prints it.
func (a *app) list(cmd *cobra.Command, path string, q url.Values, limit int, columns ...string) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	p, err := c.List(cmd.Context(), path, q, limit)
	if err != nil {
		return err
	}
	return a.printList(p, columns...)
}

// createSecret POSTs body to path, which answers with a secret shown once:
// -o json/yaml print the resource; the table format prints the secret alone
// on stdout (for scripts) and what it is on stderr.
func (a *app) createSecret(cmd *cobra.Command, path string, body any, describe func(raw []byte) (secret, note string, err error)) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.Do(cmd.Context(), http.MethodPost, path, nil, body, &raw); err != nil {
		return err
	}
	if a.output != "table" {
		return a.printRaw(raw)
	}
	secret, note, err := describe(raw)
	if err != nil {
		return err
	}
	fmt.Fprintln(a.stdout, secret)
	fmt.Fprintln(a.stderr, note)
	return nil
}
