package main

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"

	"github.com/spf13/cobra"

	"github.com/petrel-edge/petrel/compute"
	"github.com/petrel-edge/petrel/subcloud"
)

// nameArg returns the name given as the positional argument or as --name
// (its alias), exactly one of them.
func nameArg(cmd *cobra.Command, args []string, flag string) (string, error) {
	switch {
	case len(args) == 1 && flag != "" && flag != args[0]:
		return "", usagef("%s: give the name once, as NAME or --name", cmd.CommandPath())
	case len(args) == 1:
		return args[0], nil
	case len(args) == 0 && flag != "":
		return flag, nil
	}
	return "", usagef("%s needs NAME", cmd.CommandPath())
}

// imageFile is a local image file: its size, SHA-256 and format.
type imageFile struct {
	f      *os.File
	size   int64
	sum    string
	format compute.DiskFormat
}

// openImageFile reads path once to hash it and detect its format.
func openImageFile(path string) (*imageFile, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	st, err := f.Stat()
	if err != nil || !st.Mode().IsRegular() || st.Size() == 0 {
		f.Close()
		return nil, usagef("--file %s: want a non-empty regular file", path)
	}
	head := make([]byte, len(compute.QCOW2Magic))
	n, _ := io.ReadFull(f, head)
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	h := sha256.New()
	if _, err := io.Copy(h, f); err != nil {
		f.Close()
		return nil, fmt.Errorf("reading %s: %w", path, err)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		f.Close()
		return nil, err
	}
	return &imageFile{f: f, size: st.Size(), sum: hex.EncodeToString(h.Sum(nil)), format: compute.DetectFormat(head[:n])}, nil
}

// upload sends the file's bytes to image id and prints the image.
func (a *app) uploadImage(cmd *cobra.Command, id string, img *imageFile) error {
	c, err := a.client()
	if err != nil {
		return err
	}
	var raw []byte
	if err := c.Upload(cmd.Context(), http.MethodPut, "/v1/images/"+url.PathEscape(id)+"/file", img.f, img.size, &raw); err != nil {
		return fmt.Errorf("uploading image %s: %w (it stays queued: retry with 'petrel image upload %s --file F', or delete it)", id, err, id)
	}
	return a.printRaw(raw)
}

func (a *app) imageCmd() *cobra.Command {
	var file, diskFormat, project, name string
	var public bool
	create := &cobra.Command{
		Use:   "create NAME --file F [--public] [--disk-format raw|qcow2]",
		Short: "Upload an image: its SHA-256 is computed here and verified by the site",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nameArg(cmd, args, name)
			if err != nil {
				return err
			}
			if file == "" {
				return usagef("give --file F, the raw or qcow2 disk to upload")
			}
			img, err := openImageFile(file)
			if err != nil {
				return err
			}
			defer img.f.Close()
			switch compute.DiskFormat(diskFormat) {
			case "":
			case img.format:
			case compute.FormatRaw, compute.FormatQCOW2:
				return fmt.Errorf("--disk-format %s, but %s is %s (by its first bytes)", diskFormat, file, img.format)
			default:
				return usagef("--disk-format %q: want raw or qcow2", diskFormat)
			}
			req := subcloud.CreateImageRequest{Name: n, DiskFormat: img.format, Visibility: compute.Private,
				Project: project, Checksum: img.sum, Size: img.size}
			if public {
				req.Visibility = compute.Public
			}
			c, err := a.client()
			if err != nil {
				return err
			}
			var im compute.Image
			if err := c.Do(cmd.Context(), http.MethodPost, "/v1/images", nil, req, &im); err != nil {
				return err
			}
			return a.uploadImage(cmd, im.ID, img)
		},
	}
	create.Flags().StringVar(&name, "name", "", "the image's name (alias of NAME)")
	create.Flags().StringVar(&file, "file", "", "the raw or qcow2 disk to upload")
	create.Flags().BoolVar(&public, "public", false, "every project may use it (default: its project only)")
	create.Flags().StringVar(&diskFormat, "disk-format", "", "raw or qcow2 (default: detected from the file)")
	create.Flags().StringVar(&project, "project", "", "the owner project (default admin)")
	var upFile string
	upload := &cobra.Command{
		Use:   "upload NAME|ID --file F",
		Short: "Upload the bytes of a queued image again (after a failed upload)",
		Args:  exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if upFile == "" {
				return usagef("give --file F")
			}
			img, err := openImageFile(upFile)
			if err != nil {
				return err
			}
			defer img.f.Close()
			return a.uploadImage(cmd, args[0], img)
		},
	}
	upload.Flags().StringVar(&upFile, "file", "", "the disk to upload")
	var limit int
	list := &cobra.Command{Use: "list", Short: "List the site's images", Args: noArgs}
	query := filterFlags(list, "status", "disk_format", "visibility", "project")
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	list.RunE = func(cmd *cobra.Command, _ []string) error {
		return a.list(cmd, "/v1/images", query(), limit, "name", "status", "disk_format", "visibility", "project", "size", "id")
	}
	show := &cobra.Command{
		Use: "show NAME|ID", Short: "Show an image", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/images/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete an image (refused while servers use it)", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/images/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted image %s.\n", args[0])
			return nil
		},
	}
	return group("image", "A site's bootable disk images (raw or qcow2, checksummed)", create, upload, list, show, del)
}

func (a *app) flavorCmd() *cobra.Command {
	var name, project string
	var vcpus, ram, disk int
	var public bool
	create := &cobra.Command{
		Use:   "create NAME --vcpus N --ram MIB --disk GIB [--public]",
		Short: "Create a flavor (admin)",
		Args:  cobra.MaximumNArgs(1),
		RunE: func(cmd *cobra.Command, args []string) error {
			n, err := nameArg(cmd, args, name)
			if err != nil {
				return err
			}
			req := subcloud.CreateFlavorRequest{Name: n, VCPUs: vcpus, RAMMiB: ram, DiskGiB: disk, Public: public, Project: project}
			return a.call(cmd, http.MethodPost, "/v1/flavors", req)
		},
	}
	create.Flags().StringVar(&name, "name", "", "the flavor's name (alias of NAME)")
	create.Flags().IntVar(&vcpus, "vcpus", 0, "virtual CPUs, 1-64")
	create.Flags().IntVar(&ram, "ram", 0, "memory in MiB, 64-1048576")
	create.Flags().IntVar(&disk, "disk", 0, "root disk in GiB, 1-10000")
	create.Flags().BoolVar(&public, "public", false, "every project may use it (default: its project only)")
	create.Flags().StringVar(&project, "project", "", "the owner project (default admin)")
	for _, f := range []string{"vcpus", "ram", "disk"} {
		_ = create.MarkFlagRequired(f)
	}
	var limit int
	list := &cobra.Command{
		Use: "list", Short: "List the flavors (a site's; at central, the shared ones every managed site gets)", Args: noArgs,
		RunE: func(cmd *cobra.Command, _ []string) error {
			return a.list(cmd, "/v1/flavors", nil, limit, "name", "vcpus", "ram_mib", "disk_gib", "public", "project", "id")
		},
	}
	list.Flags().IntVar(&limit, "limit", 0, "at most this many (default all)")
	show := &cobra.Command{
		Use: "show NAME|ID", Short: "Show a flavor", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			return a.call(cmd, http.MethodGet, "/v1/flavors/"+url.PathEscape(args[0]), nil)
		},
	}
	del := &cobra.Command{
		Use: "delete NAME|ID", Short: "Delete a flavor (admin)", Args: exactArgs(1, "NAME|ID"),
		RunE: func(cmd *cobra.Command, args []string) error {
			if err := a.call(cmd, http.MethodDelete, "/v1/flavors/"+url.PathEscape(args[0]), nil); err != nil {
				return err
			}
			fmt.Fprintf(a.stdout, "Deleted flavor %s.\n", args[0])
			return nil
		},
	}
	return group("flavor", "Flavors: vCPUs, memory and disk for servers; at a site its own, at central the shared ones kept at every managed site", create, list, show, del)
}
