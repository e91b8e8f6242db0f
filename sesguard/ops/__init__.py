"""Operator tooling: bootstrap, reports, partner operations and transitions, notices,
tenants, IAM permissions, the DLQ tools and the console. Built on core, aws and runtime.
"""
