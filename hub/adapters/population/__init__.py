"""Adapter for the population database (CSDLQG về dân cư): citizen look-up over SOAP, through zeep."""

from hub.adapters.population.base import PEER, CitizenLookup, PopulationDatabase
from hub.adapters.population.client import PopulationClient

__all__ = ["PEER", "CitizenLookup", "PopulationClient", "PopulationDatabase"]
