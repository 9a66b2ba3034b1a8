"""Pure rules of the domain: identifiers, dates, the dossier status machine. Imports only stdlib and pydantic."""
