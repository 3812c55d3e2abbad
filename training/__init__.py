"""Training of the tiny S3 variants on synthetic video (torch world; import s3rt.training)."""
