package compute

// Tenancy: servers, non-public images and non-public flavors belong to a
// project. A caller sees its own project's, public ones, and — with the
// cloud-wide admin role — every project's.

// VisibleTo reports whether a caller of project (an admin or not) may see
// and use the image.
func (im Image) VisibleTo(project string, admin bool) bool {
	return admin || im.Visibility == Public || im.Project == project
}

// VisibleTo reports whether a caller of project may see and use the
// flavor.
func (f Flavor) VisibleTo(project string, admin bool) bool {
	return admin || f.Public || f.Project == project
}

// VisibleTo reports whether a caller of project may see the server.
func (sv Server) VisibleTo(project string, admin bool) bool {
	return admin || sv.Project == project
}
