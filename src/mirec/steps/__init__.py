"""Pipeline steps: the library functions the Kubeflow components call, one per component."""
