"""The shim's Flask dialect against a real Flask + flask-cors + webargs + marshmallow app."""
