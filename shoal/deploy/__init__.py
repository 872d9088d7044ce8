"""Deployments: LocalCluster and worker-process management."""
