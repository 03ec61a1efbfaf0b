module gridwise.dev/tests/probe

go 1.22
