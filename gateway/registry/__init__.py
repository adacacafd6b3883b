"""The registry: bindings in SQL (store), served from memory (service)."""

from gateway.registry.binding import Binding
from gateway.registry.service import LocationService
from gateway.registry.store import LocationStore, RegistryUnavailable

__all__ = ["Binding", "LocationService", "LocationStore", "RegistryUnavailable"]
