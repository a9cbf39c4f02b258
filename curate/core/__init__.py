"""The core: workspace and schema, the stage contract, runner and executors, pipeline, policy, manifest."""
