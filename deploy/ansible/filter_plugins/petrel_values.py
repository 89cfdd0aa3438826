"""Validation of a Petrel site's values against the allow-list in vars/schema.yml.

bootstrap.yml's first task calls petrel_validate and fails the play with the
first problem, naming the variable (e.g. "petrel.mgmt_address: required").
"""

import ipaddress
import re

NAME = re.compile(r"^[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$")
HOSTPORT = re.compile(r"^(\[[0-9a-fA-F:.]+\]|[A-Za-z0-9.-]+):([0-9]{1,5})$")


def _check(key, spec, value):
    kind = spec.get("kind")
    if kind in ("name", "enum", "ip", "hostport", "url", "path", "secret", "text"):
        if not isinstance(value, str) or value == "":
            return "must be a non-empty string"
        if "\n" in value or "\x00" in value:
            return "must be one line"
    if kind == "name" and not NAME.match(value):
        return "%r is not a lower-case DNS label" % value
    if kind == "enum" and value not in spec.get("values", []):
        return "%r is not one of %s" % (value, ", ".join(spec["values"]))
    if kind == "ip":
        try:
            ipaddress.ip_address(value)
        except ValueError:
            return "%r is not an IP address" % value
    if kind == "hostport":
        m = HOSTPORT.match(value)
        if not m or not 0 < int(m.group(2)) < 65536:
            return "%r is not HOST:PORT" % value
    if kind == "url" and not re.match(r"^https://[^/\s]+(/\S*)?$", value):
        return "%r is not an https:// URL" % value
    if kind == "path" and (not value.startswith("/") or "/../" in value + "/"):
        return "%r is not an absolute path without .." % value
    if kind == "text" and len(value) > 64:
        return "must be at most 64 characters"
    if kind == "int":
        if isinstance(value, bool) or not isinstance(value, int):
            return "must be an integer"
        if value < spec.get("min", value) or value > spec.get("max", value):
            return "must be in [%s, %s]" % (spec.get("min"), spec.get("max"))
    if kind == "bool" and not isinstance(value, bool):
        return "must be true or false"
    return None


def petrel_validate(values, schema, prefix="petrel"):
    """Return the problems of values (a mapping) against schema, each naming its variable."""
    if values is None or values == "":
        return ["%s: required (a mapping of site values; see deploy/ansible/vars/schema.yml)" % prefix]
    if not isinstance(values, dict):
        return ["%s: must be a mapping of site values" % prefix]
    errors = []
    for key in sorted(values, key=str):
        name = "%s.%s" % (prefix, key)
        if not isinstance(key, str):
            errors.append("%s: keys must be strings" % name)
        elif key.lower().startswith("ansible_"):
            errors.append("%s: ansible_* keys are refused (values never steer Ansible)" % name)
        elif key not in schema:
            errors.append("%s: unknown key (allowed: %s)" % (name, ", ".join(sorted(schema))))
        else:
            problem = _check(key, schema[key], values[key])
            if problem:
                errors.append("%s: %s" % (name, problem))
    for key in sorted(schema):
        if schema[key].get("required") and key not in values:
            errors.append("%s.%s: required" % (prefix, key))
    return errors


class FilterModule(object):
    def filters(self):
        return {"petrel_validate": petrel_validate}
