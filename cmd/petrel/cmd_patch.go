package main

import (
	"fmt"
	"net/http"
	"net/url"
	"os"
	"strings"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/internal/version"
	"github.com/petrel-edge/petrel/lab"
	"github.com/petrel-edge/petrel/swpatch"
)

// patchCmd is `petrel patch`: build signed patches here; upload, list,
// show and delete them at central (which syncs them to the sites and
// installs them with a fleet strategy), or, with --site, upload, apply,
// remove, commit and delete them at a site (docs/patching.md).
func (a *app) patchCmd() *cobra.Command {
	build := a.patchBuildCmd()
	upload := &cobra.Command{
		Use: "upload FILE", Short: "Upload a patch archive to central (synced from there to the managed sites) or, with --site, to a site; verified before anything is kept",
		Args: exactArgs(1, "FILE"),
		RunE: func(cmd *cobra.Command, args []string) error {
			f, err := os.Open(args[0])
			if err != nil {
				return err
			}
			defer f.Close()
			st, err := f.Stat()
			if err != nil {
				return err
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var raw []byte
			if err := c.Upload(cmd.Context(), http.MethodPost, "/v1/patches", f, st.Size(), &raw); err != nil {
				return fmt.Errorf("uploading %s: %w", args[0], err)
			}
			return a.printRaw(raw)
		},
	}
	list := &cobra.Command{
		Use: "list", Short: "List the patches at central, or with --site the site's and their states", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/patches", nil, 0, "id", "version", "state", "reboot_required", "requires")
		},
	}
	show := &cobra.Command{
		Use: "show ID", Short: "Show a patch (with --site: with each host's state towards it)", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/patches/"+url.PathEscape(args[0]), nil)
		},
	}
	verbs := []*cobra.Command{build, upload, list, show}
	for _, v := range []struct{ verb, short string }{
		{"apply", "Apply a patch at a site (--site): hosts are to install it (refused, naming it, while a requirement is not applied)"},
		{"remove", "Remove an applied patch: hosts are to go back to their software without it"},
		{"commit", "Commit a deployed patch: it can no longer be removed"},
	} {
		verbs = append(verbs, &cobra.Command{
			Use: v.verb + " ID", Short: v.short, Args: exactArgs(1, "ID"),
			RunE: func(cmd *cobra.Command, args []string) error {
				return a.call(cmd, http.MethodPost, "/v1/patches/"+url.PathEscape(args[0])+"/"+v.verb, nil)
			},
		})
	}
	del := &cobra.Command{
		Use: "delete ID", Short: "Delete an available patch and its archive", Args: exactArgs(1, "ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/patches/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted patch %s.\n", args[0])
			return nil
		},
	}
	verbs = append(verbs, del)
	return group("patch", "Software patches: build signed archives, upload them to central or a site, apply them at a site (docs/patching.md)", verbs...)
}

// patchBuildCmd is `petrel patch build`.
func (a *app) patchBuildCmd() *cobra.Command {
	var (
		id, ver, keyFile, labDir, out, binary, desc string
		requires, files, preCheck, postInstall      []string
		reboot                                      bool
	)
	c := &cobra.Command{
		Use:   "build --id ID [--version V] [--requires ID]... [--reboot-required] [--file SRC:DEST]... [--binary PATH] (--key FILE | --dir LABDIR) --out FILE",
		Short: "Build and sign a patch archive; by default it carries this petrel binary, stamped as version CURRENT+ID",
		Long: "Build and sign a patch archive. Its content is the files given with --file (DEST relative to the\n" +
			"host's software slot) and, with --binary, a new petrel (bin/petrel); with neither, this petrel binary.\n" +
			"The version defaults to this petrel's version stamped with the ID (CURRENT+ID): hosts that boot the\n" +
			"patched slot report it as their software_version. The signing key is an ed25519 PEM file readable by\n" +
			"its owner only (--key), or the lab's (--dir: DIR/keys/patch-signing.key).",
		Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			if id == "" || out == "" {
				return usagef("--id and --out are required")
			}
			if !swpatch.ValidID(id) {
				return usagef("--id %q: 1-64 letters, digits, '.', '_' or '-'", id)
			}
			switch {
			case keyFile != "" && labDir != "":
				return usagef("give --key or --dir, not both")
			case keyFile == "" && labDir == "" && a.getenv("PETREL_LAB_DIR") == "":
				return usagef("a signing key is required: --key FILE or --dir LABDIR")
			case keyFile == "":
				lf, err := lab.Load(a.labDir(labDir))
				if err != nil {
					return err
				}
				keyFile = lf.PatchSigning.PrivateKey
			}
			key, err := swpatch.LoadPrivateKey(keyFile)
			if err != nil {
				return err
			}
			if ver == "" {
				ver = swpatch.Stamp(version.Get().Version, id)
			}
			spec := swpatch.BuildSpec{ID: id, Version: ver, Requires: requires, RebootRequired: reboot,
				PreCheck: splitArgv(preCheck), PostInstall: splitArgv(postInstall), Description: desc}
			for _, f := range files {
				src, dest, ok := strings.Cut(f, ":")
				if !ok || src == "" || dest == "" {
					return usagef("--file %q: want SRC:DEST", f)
				}
				fi, err := os.Stat(src)
				if err != nil {
					return err
				}
				spec.Files = append(spec.Files, swpatch.Content{Path: dest, Source: src, Mode: uint32(fi.Mode().Perm())})
			}
			if binary == "" && len(files) == 0 {
				if binary, err = os.Executable(); err != nil {
					return err
				}
			}
			if binary != "" {
				spec.Files = append(spec.Files, swpatch.Content{Path: swpatch.BinaryPath, Source: binary, Mode: 0o755})
				if !cmd.Flags().Changed("reboot-required") {
					spec.RebootRequired = true // a new binary runs from the next boot
				}
			}
			tmp := out + ".tmp"
			f, err := os.OpenFile(tmp, os.O_CREATE|os.O_WRONLY|os.O_TRUNC, 0o644)
			if err != nil {
				return err
			}
			m, err := swpatch.Build(f, spec, key)
			if err == nil {
				err = f.Sync()
			}
			if cerr := f.Close(); err == nil {
				err = cerr
			}
			if err != nil {
				os.Remove(tmp)
				return err
			}
			if err := os.Rename(tmp, out); err != nil {
				os.Remove(tmp)
				return err
			}
			fmt.Fprintf(a.stdout, "Built patch %s (version %s, %d files, reboot required: %v) in %s.\n",
				m.ID, m.Version, len(m.Files), m.RebootRequired, out)
			return nil
		},
	}
	fl := c.Flags()
	fl.StringVar(&id, "id", "", "the patch's ID")
	fl.StringVar(&ver, "version", "", "the software version the patch brings (default CURRENT+ID)")
	fl.StringArrayVar(&requires, "requires", nil, "a patch this one requires (repeatable)")
	fl.BoolVar(&reboot, "reboot-required", false, "hosts install it locked and reboot into it (default: true when it carries a binary)")
	fl.StringArrayVar(&files, "file", nil, "SRC:DEST: put the local file SRC at DEST in the slot (repeatable)")
	fl.StringVar(&binary, "binary", "", "a petrel binary for bin/petrel")
	fl.StringVar(&keyFile, "key", "", "the ed25519 signing key (PEM, mode 0600)")
	fl.StringVar(&labDir, "dir", "", "sign with this lab's key (DIR/keys/patch-signing.key)")
	fl.StringVar(&out, "out", "", "where to write the archive")
	fl.StringVar(&desc, "description", "", "what the patch does")
	fl.StringArrayVar(&preCheck, "pre-check", nil, "a command run in the slot before it is marked (argv split on spaces; its program one of the patch's files)")
	fl.StringArrayVar(&postInstall, "post-install", nil, "a command run in the slot after install (as --pre-check)")
	return c
}

func splitArgv(v []string) []string {
	if len(v) == 0 {
		return nil
	}
	return strings.Fields(strings.Join(v, " "))
}

// hostInstallCmd is `petrel host install`.
func (a *app) hostInstallCmd() *cobra.Command {
	return &cobra.Command{
		Use:   "install NAME|UUID",
		Short: "Install the applied patches on a host (locked when they need a reboot; unlock then boots them)",
		Args:  exactArgs(1, "NAME|UUID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodPost, "/v1/hosts/"+url.PathEscape(args[0])+"/install", nil)
		},
	}
}
