"""The kernels that run students' code: the bubblewrap and Landlock sandbox, the kernel
started inside it, the fork server that starts many of them fast, and the kernel manager
nbgrader drives. The only part of the course that executes a submission."""
