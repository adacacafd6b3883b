"""The registry: bindings in SQL (store), served from memory (service)."""

from gateway.location.binding import Binding
from gateway.location.service import LocationService
from gateway.location.store import LocationStore, RegistryUnavailable

__all__ = ["Binding", "LocationService", "LocationStore", "RegistryUnavailable"]
