"""Fridge Objects detector from notebook to AWS Lambda.

`helpers.runtime` is the Lambda-safe half (the whole of what the Lambda zip ships): stdlib, numpy, Pillow, onnxruntime,
boto3 lazily. Everything else is the dev half (torch, albumentations, ...). Keep this file empty of
imports so `import helpers.runtime` never pulls in the dev half.
"""
