"""Science on files, outside the database: light curves from CSV files, light-curve frames straight from packets."""
