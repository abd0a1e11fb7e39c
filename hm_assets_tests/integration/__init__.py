"""Tests that materialize weeks or start servers, browsers, PostgreSQL or S3 (marked ``slow``)."""
