"""HTTP faces of the simulated systems: each module speaks one vendor's dialect (paths, auth, errors, paging)."""
